package mapping

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

var update = flag.Bool("update", false, "rewrite testdata/*/*.golden from the current output")

// golden compares got with the golden file next to the document, or
// rewrites it under -update.
func golden(t *testing.T, doc, got string) {
	t.Helper()
	path := strings.TrimSuffix(doc, ".json") + ".golden"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s: got\n%s\nwant\n%s", doc, got, want)
	}
}

func TestParseGoodDocuments(t *testing.T) {
	docs, err := filepath.Glob("testdata/good/*.json")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no good documents: %v", err)
	}
	for _, doc := range docs {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			data, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			canon, err := m.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s\nselect: %s\nmanager: %s\n", canon,
				strings.Join(m.Select(), ","), strings.Join(m.ManagerSelect(), ","))
			golden(t, doc, got)

			// The canonical form parses back to the same mapping.
			again, err := Parse(canon)
			if err != nil {
				t.Fatalf("Parse(canonical): %v", err)
			}
			if !reflect.DeepEqual(again, m) {
				t.Errorf("round trip changed the mapping:\n got %+v\nwant %+v", again, m)
			}
			if again.Hash() != m.Hash() {
				t.Errorf("round trip changed the hash")
			}
			if !slices.IsSortedFunc(m.Properties, func(a, b Property) int { return strings.Compare(a.Target, b.Target) }) {
				t.Errorf("properties not sorted by target: %+v", m.Properties)
			}
		})
	}
}

func TestParseBadDocuments(t *testing.T) {
	docs, err := filepath.Glob("testdata/bad/*.json")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no bad documents: %v", err)
	}
	for _, doc := range docs {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			data, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(data)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", m)
			}
			if m != nil {
				t.Errorf("Parse returned a mapping along with an error")
			}
			problems := Problems(err)
			if len(problems) == 0 {
				t.Fatalf("Problems(%v) is empty", err)
			}
			var lines []string
			for _, p := range problems {
				lines = append(lines, p.Error())
			}
			if joined := strings.Join(lines, "\n"); joined != err.Error() {
				t.Errorf("problems %q do not spell the error %q", joined, err.Error())
			}
			golden(t, doc, err.Error()+"\n")
		})
	}
}

func TestParseDefaults(t *testing.T) {
	m, err := Parse([]byte(`{"properties":{"Title":"jobTitle"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Mapping{
		IDType:     profile.CloudID,
		Properties: []Property{{Target: "Title", Source: "jobTitle", Separator: ","}},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %+v, want %+v", m, want)
	}
}

func TestCheckSource(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		kind     kind
	}{
		{"mobilePhone", "mobilePhone", kindString},
		{"MOBILEPHONE", "mobilePhone", kindString},
		{"BusinessPhones", "businessPhones", kindCollection},
		{"accountenabled", "accountEnabled", kindBool},
		{"employeeHireDate", "employeeHireDate", kindDateTime},
		{"employeeOrgData.division", "employeeOrgData.division", kindString},
		{"EmployeeOrgData.COSTCENTER", "employeeOrgData.costCenter", kindString},
		{"onPremisesExtensionAttributes.extensionAttribute15", "onPremisesExtensionAttributes.extensionAttribute15", kindString},
		{"manager.mail", "manager.mail", kindString},
		{"Manager.OtherMails", "manager.otherMails", kindCollection},
		{"manager.createdDateTime", "manager.createdDateTime", kindDateTime},
		{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter", kindExtension},
		{"manager.extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", "manager.extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", kindExtension},
	} {
		norm, k, msg := checkSource(tc.in)
		if msg != "" || norm != tc.want || k != tc.kind {
			t.Errorf("checkSource(%q) = %q, %v, %q; want %q, %v, \"\"", tc.in, norm, k, msg, tc.want, tc.kind)
		}
	}
}

func TestHash(t *testing.T) {
	const base = `{"idType":"CloudId","properties":{"A":"mail","B":{"source":"businessPhones","separator":";"}},"users":{"includeGuests":false,"includeDisabled":false}}`
	hash := func(t *testing.T, doc string) string {
		t.Helper()
		m, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse(%s): %v", doc, err)
		}
		return m.Hash()
	}
	want := hash(t, base)
	if len(want) != 64 {
		t.Fatalf("hash %q is not hex SHA-256", want)
	}
	same := []string{
		"{\n  \"users\": {\"includeDisabled\": false, \"includeGuests\": false},\n  \"properties\": {\"B\": {\"separator\": \";\", \"source\": \"businessPhones\"}, \"A\": \"mail\"}\n}",
		`{"properties":{"A":"Mail","B":{"source":"BusinessPhones","separator":";"}},"idType":"cloudid"}`,
		`{"properties":{"A":{"source":"mail"},"B":{"source":"businessPhones","separator":";"}},"users":null}`,
	}
	for _, doc := range same {
		if got := hash(t, doc); got != want {
			t.Errorf("equivalent document hashed differently: %s", doc)
		}
	}
	different := []string{
		strings.Replace(base, "CloudId", "Email", 1),
		strings.Replace(base, `"A":"mail"`, `"A":"city"`, 1),
		strings.Replace(base, `"A":"mail"`, `"AA":"mail"`, 1),
		strings.Replace(base, `"A":"mail"`, `"a":"mail"`, 1),
		strings.Replace(base, `";"`, `","`, 1),
		strings.Replace(base, `"includeGuests":false`, `"includeGuests":true`, 1),
		strings.Replace(base, `"includeDisabled":false`, `"includeDisabled":true`, 1),
		strings.Replace(base, `"A":"mail"`, `"A":"mail","C":"city"`, 1),
	}
	seen := map[string]string{want: base}
	for _, doc := range different {
		got := hash(t, doc)
		if prev, dup := seen[got]; dup {
			t.Errorf("different documents share a hash:\n%s\n%s", doc, prev)
		}
		seen[got] = doc
	}
}

func TestProblems(t *testing.T) {
	_, err := Parse([]byte(`{"idType":"x","properties":{"A":"mobilPhone","B":"mail"},"extra":1}`))
	want := []Problem{
		{Path: "idType", Message: `"x" is not an idType (want CloudId, PrincipalName or Email)`},
		{Path: "properties.A", Message: `"mobilPhone" is not a Microsoft Graph user property (did you mean "mobilePhone"?)`},
		{Path: "extra", Message: "unknown field (known fields: idType, properties, users)"},
	}
	if got := Problems(err); !reflect.DeepEqual(got, want) {
		t.Errorf("Problems = %+v, want %+v", got, want)
	}
	if got := Problems(fmt.Errorf("reading mapping: %w", err)); !reflect.DeepEqual(got, want) {
		t.Errorf("Problems(wrapped) = %+v, want %+v", got, want)
	}
	var p *Problem
	if !errors.As(err, &p) || p.Path != "idType" {
		t.Errorf("errors.As found %+v, want the idType problem", p)
	}
	if got := Problems(nil); got != nil {
		t.Errorf("Problems(nil) = %+v", got)
	}
	if got := Problems(errors.New("other")); got != nil {
		t.Errorf("Problems(other) = %+v", got)
	}
	if got := (&Problem{Message: "whole"}).Error(); got != "whole" {
		t.Errorf("root problem reads %q", got)
	}
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name          string
		props         []Property
		select_, mgrs []string
	}{
		{
			name:    "always selected only",
			props:   []Property{{Target: "Mail", Source: "mail"}},
			select_: []string{"accountEnabled", "id", "mail", "userPrincipalName", "userType"},
		},
		{
			name: "dotted and manager",
			props: []Property{
				{Target: "A", Source: "employeeOrgData.division"},
				{Target: "B", Source: "employeeOrgData.costCenter"},
				{Target: "C", Source: "manager.mail"},
				{Target: "D", Source: "manager.mail"},
				{Target: "E", Source: "manager.displayName"},
				{Target: "F", Source: "businessPhones"},
				{Target: "G", Source: "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x"},
			},
			select_: []string{"accountEnabled", "businessPhones", "employeeOrgData",
				"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", "id", "mail", "manager",
				"userPrincipalName", "userType"},
			mgrs: []string{"displayName", "id", "mail"},
		},
		{
			name:    "manager id only",
			props:   []Property{{Target: "Boss", Source: "manager.id"}},
			select_: []string{"accountEnabled", "id", "mail", "manager", "userPrincipalName", "userType"},
			mgrs:    []string{"id"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Mapping{Properties: tc.props}
			if got := m.Select(); !slices.Equal(got, tc.select_) {
				t.Errorf("Select = %v, want %v", got, tc.select_)
			}
			got := m.ManagerSelect()
			if !slices.Equal(got, tc.mgrs) || (tc.mgrs == nil) != (got == nil) {
				t.Errorf("ManagerSelect = %#v, want %#v", got, tc.mgrs)
			}
		})
	}
}

func TestPropertyMap(t *testing.T) {
	m := &Mapping{Properties: []Property{{Target: "CostCenter", Source: "mail"}, {Target: "Phones", Source: "businessPhones"}}}
	want := map[string]string{"CostCenter": "CostCenter", "Phones": "Phones"}
	if got := m.PropertyMap(); !reflect.DeepEqual(got, want) {
		t.Errorf("PropertyMap = %v, want %v", got, want)
	}
}

func TestMarshalJSONSortsHandBuiltMappings(t *testing.T) {
	m := &Mapping{IDType: profile.Email, Properties: []Property{
		{Target: "Z", Source: "mail", Separator: ","},
		{Target: "A", Source: "otherMails", Separator: "\n<"},
	}}
	got, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"idType":"Email","properties":{"A":{"source":"otherMails","separator":"\n<"},"Z":"mail"},"users":{"includeGuests":false,"includeDisabled":false}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
