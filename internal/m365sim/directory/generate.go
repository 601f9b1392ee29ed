package directory

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"
)

// CostCenterExt is the directory extension the generator sets on most users.
const CostCenterExt = "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter"

// Domain is the tenant's default domain in generated UPNs.
const Domain = "contoso.onmicrosoft.com"

// Generated tenants give the first users fixed quirks so tests can rely on
// them; later users get quirks at random (about 5% guests, 3% disabled,
// 2% without mail, 10% non-Latin names, 3% special characters, 10% without
// the cost-center extension). The fixed indexes are:
const (
	GenRoot       = 0 // top of the manager tree: no manager; plain ASCII values
	GenNonLatin   = 1 // displayName "李雷 Li", city "Ærøskøbing"
	GenGuest      = 2 // userType Guest, UPN with #EXT#, mail at fabrikam.com
	GenDisabled   = 3 // accountEnabled false
	GenNoMail     = 4 // no mail property at all
	GenSpecial    = 5 // jobTitle/department with ", \, newline, tab and emoji
	GenBare       = 6 // no cost-center extension, no businessPhones, employeeOrgData null
	GenGreek      = 7 // displayName "Ελένη Ñandú"
	GenFixedCount = 8 // users below this index have the quirks above
)

// GenManager returns the index of the manager of generated user i (-1 for
// the root): users form an 8-ary tree, user i reports to (i-1)/8.
func GenManager(i int) int {
	if i == 0 {
		return -1
	}
	return (i - 1) / 8
}

var (
	givenNames = []string{"Adele", "Alex", "Diego", "Grady", "Isaiah", "Johanna", "Lee", "Lidia",
		"Lynne", "Megan", "Miriam", "Nestor", "Patti", "Pradeep", "Henrietta", "Joni"}
	surnames = []string{"Vance", "Wilber", "Siciliani", "Archie", "Langer", "Lanier", "Gu", "Holloway",
		"Robichaux", "Bowen", "Graham", "Wilke", "Fernandez", "Gupta", "Mueller", "Sherman"}
	intlGiven = []string{"李雷", "韩梅梅", "Ελένη", "Ñandú", "Søren", "Zoë", "Дмитрий", "José", "Małgorzata", "Ærøskøbing"}
	intlSur   = []string{"王", "Παπαδοπούλου", "Ærøskøbing", "Müller", "Núñez", "Øster", "Иванов", "Kowalczyk"}
	cities    = []string{"Seattle", "Redmond", "London", "Ærøskøbing", "São Paulo", "Zürich", "東京", "Αθήνα"}
	countries = []string{"United States", "United States", "United Kingdom", "Denmark", "Brazil", "Switzerland", "Japan", "Greece"}
	usage     = []string{"US", "US", "GB", "DK", "BR", "CH", "JP", "GR"}
	langs     = []string{"en-US", "en-US", "en-GB", "da-DK", "pt-BR", "de-CH", "ja-JP", "el-GR"}
	titles    = []string{"Engineer", "Senior Engineer", "Product Manager", "Designer", "Sales Lead",
		"Accountant", "Recruiter", "Director", "Support Specialist", "Analyst"}
	depts     = []string{"Engineering", "Sales", "Marketing", "Finance", "HR", "Operations", "Legal", "Support"}
	divisions = []string{"Cloud", "Devices", "Corporate", "Retail"}
	offices   = []string{"Building 1", "Building 2", "Remote", "HQ 3/101"}
	specials  = []string{`Senior "Lead" Engineer`, `R&D \ Platform`, "Line one\nLine two", "Tab\tSeparated",
		"Rocket 🚀 Scientist", `Quote " backslash \ newline` + "\n" + `emoji 🎉`}
)

// Generate builds a deterministic tenant of n users from seed: the same n
// and seed always give the same users, ids included. See the Gen* constants
// for the fixed quirks of the first users.
func Generate(n int, seed int64) []User {
	r := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	users := make([]User, n)
	hire := time.Date(2015, 1, 5, 0, 0, 0, 0, time.UTC)
	for i := range users {
		var b [16]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		u := User{ID: formatUUID(b), Props: make(map[string]any, 28)}
		if m := GenManager(i); m >= 0 {
			u.ManagerID = users[m].ID
		}
		roll := func(pct int) bool { return r.IntN(1000) < pct*10 }
		guest, disabled, noMail := i == GenGuest, i == GenDisabled, i == GenNoMail
		intl, special, bare := i == GenNonLatin || i == GenGreek, i == GenSpecial, i == GenBare
		if i >= GenFixedCount {
			guest, disabled, noMail = roll(5), roll(3), roll(2)
			intl, special, bare = roll(10), roll(3), roll(10)
		}
		given, sur := givenNames[r.IntN(len(givenNames))], surnames[r.IntN(len(surnames))]
		local := strings.ToLower(given + "." + sur)
		switch {
		case i == GenNonLatin:
			given, sur, local = "李雷", "Li", "li.lei"
		case i == GenGreek:
			given, sur, local = "Ελένη", "Ñandú", "eleni.nandu"
		case intl:
			given, sur = intlGiven[r.IntN(len(intlGiven))], intlSur[r.IntN(len(intlSur))]
			local = "user"
		}
		local = fmt.Sprintf("%s%d", local, i)
		p := u.Props
		p["givenName"], p["surname"] = given, sur
		p["displayName"] = given + " " + sur
		city := r.IntN(len(cities))
		if i == GenNonLatin {
			city = 3
		}
		if guest {
			p["userPrincipalName"] = local + "_fabrikam.com#EXT#@" + Domain
			p["mail"] = local + "@fabrikam.com"
			p["userType"] = "Guest"
			p["creationType"] = "Invitation"
		} else {
			p["userPrincipalName"] = local + "@" + Domain
			p["mail"] = local + "@contoso.com"
			p["userType"] = "Member"
		}
		if noMail {
			delete(p, "mail")
		}
		p["mailNickname"] = local
		p["accountEnabled"] = !disabled
		p["jobTitle"] = titles[r.IntN(len(titles))]
		p["department"] = depts[r.IntN(len(depts))]
		if special {
			p["jobTitle"] = specials[r.IntN(len(specials))]
			p["department"] = specials[len(specials)-1]
			if i == GenSpecial {
				p["jobTitle"] = specials[0] + " " + specials[1] + " " + specials[2] + " " + specials[3] + " " + specials[4]
			}
		}
		p["companyName"] = "Contoso"
		p["officeLocation"] = offices[r.IntN(len(offices))]
		p["city"], p["country"] = cities[city], countries[city]
		p["usageLocation"], p["preferredLanguage"] = usage[city], langs[city]
		phones := []any{}
		if !bare {
			for range r.IntN(3) {
				phones = append(phones, fmt.Sprintf("+1 425 555 %04d", r.IntN(10000)))
			}
		}
		p["businessPhones"] = phones
		if r.IntN(2) == 0 {
			p["mobilePhone"] = fmt.Sprintf("+1 206 555 %04d", r.IntN(10000))
		}
		p["otherMails"] = []any{}
		p["employeeId"] = fmt.Sprintf("E%06d", i)
		p["employeeType"] = "Employee"
		if r.IntN(10) == 0 {
			p["employeeType"] = "Contractor"
		}
		p["employeeHireDate"] = hire.AddDate(0, 0, r.IntN(3650)).Format(time.RFC3339)
		cc := fmt.Sprintf("CC-%04d", 1000+r.IntN(50))
		if bare {
			p["employeeOrgData"] = nil
		} else {
			p["employeeOrgData"] = map[string]any{"division": divisions[r.IntN(len(divisions))], "costCenter": cc}
			p[CostCenterExt] = cc
		}
		attrs := map[string]any{"extensionAttribute1": fmt.Sprintf("EA1-%d", i)}
		if r.IntN(4) == 0 {
			attrs["extensionAttribute7"] = depts[r.IntN(len(depts))]
		}
		p["onPremisesExtensionAttributes"] = attrs
		users[i] = u
	}
	return users
}

// Tenant is the JSON document of a tenant file:
//
//	{"users":[{"id":"<uuid>","managerId":"<uuid>","deleted":false,"props":{"userPrincipalName":"…",…}}]}
//
// id may be omitted (a random one is assigned); managerId may name any user
// of the file; props must include userPrincipalName.
type Tenant struct {
	Users []User `json:"users"`
}

// ReadTenant decodes a tenant file.
func ReadTenant(r io.Reader) ([]User, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var t Tenant
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("decoding tenant file: %w", err)
	}
	return t.Users, nil
}

// WriteTenant encodes users as a tenant file.
func WriteTenant(w io.Writer, users []User) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(Tenant{Users: users}); err != nil {
		return fmt.Errorf("encoding tenant file: %w", err)
	}
	return nil
}
