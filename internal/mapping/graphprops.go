package mapping

import (
	"regexp"
	"strings"
)

// kind says how a Microsoft Graph user property is shaped, which decides
// how it may be addressed in a mapping and how its value becomes text.
type kind int

const (
	kindString     kind = iota // a single string (or a number read as text)
	kindBool                   // Edm.Boolean
	kindDateTime               // Edm.DateTimeOffset, normalised to ISO 8601 UTC
	kindCollection             // a collection of strings, joined with a separator
	kindComplex                // an object whose fields are addressed with a dotted path
	kindManager                // the manager navigation property
	kindExtension              // a directory extension: type unknown until read
)

// userProps lists the Microsoft Graph v1.0 user properties that can be
// selected on GET /users and /users/delta, in Graph's own spelling. The table
// is deliberately explicit: an unknown name makes Graph answer 400 and fail
// the whole run, so it is better caught when the mapping is read.
var userProps = map[string]kind{
	"id":                              kindString,
	"userPrincipalName":               kindString,
	"mail":                            kindString,
	"mailNickname":                    kindString,
	"displayName":                     kindString,
	"givenName":                       kindString,
	"surname":                         kindString,
	"jobTitle":                        kindString,
	"department":                      kindString,
	"companyName":                     kindString,
	"officeLocation":                  kindString,
	"mobilePhone":                     kindString,
	"businessPhones":                  kindCollection,
	"faxNumber":                       kindString,
	"streetAddress":                   kindString,
	"city":                            kindString,
	"state":                           kindString,
	"postalCode":                      kindString,
	"country":                         kindString,
	"usageLocation":                   kindString,
	"preferredLanguage":               kindString,
	"preferredDataLocation":           kindString,
	"employeeId":                      kindString,
	"employeeType":                    kindString,
	"employeeHireDate":                kindDateTime,
	"employeeLeaveDateTime":           kindDateTime,
	"employeeOrgData":                 kindComplex,
	"onPremisesExtensionAttributes":   kindComplex,
	"onPremisesSamAccountName":        kindString,
	"onPremisesDistinguishedName":     kindString,
	"onPremisesDomainName":            kindString,
	"onPremisesUserPrincipalName":     kindString,
	"onPremisesImmutableId":           kindString,
	"onPremisesSecurityIdentifier":    kindString,
	"onPremisesSyncEnabled":           kindBool,
	"onPremisesLastSyncDateTime":      kindDateTime,
	"securityIdentifier":              kindString,
	"otherMails":                      kindCollection,
	"proxyAddresses":                  kindCollection,
	"imAddresses":                     kindCollection,
	"userType":                        kindString,
	"accountEnabled":                  kindBool,
	"ageGroup":                        kindString,
	"consentProvidedForMinor":         kindString,
	"legalAgeGroupClassification":     kindString,
	"createdDateTime":                 kindDateTime,
	"creationType":                    kindString,
	"externalUserState":               kindString,
	"externalUserStateChangeDateTime": kindDateTime,
	"lastPasswordChangeDateTime":      kindDateTime,
	"passwordPolicies":                kindString,
	"showInAddressList":               kindBool,
	"manager":                         kindManager,
}

// complexFields lists, per complex property, the fields a dotted path may
// address, in Graph's spelling.
var complexFields = map[string][]string{
	"employeeOrgData": {"division", "costCenter"},
	"onPremisesExtensionAttributes": {
		"extensionAttribute1", "extensionAttribute2", "extensionAttribute3",
		"extensionAttribute4", "extensionAttribute5", "extensionAttribute6",
		"extensionAttribute7", "extensionAttribute8", "extensionAttribute9",
		"extensionAttribute10", "extensionAttribute11", "extensionAttribute12",
		"extensionAttribute13", "extensionAttribute14", "extensionAttribute15",
	},
}

// notOnCollections lists user properties Graph only returns for a single
// user: selecting them on /users answers 501 Not Implemented.
var notOnCollections = []string{
	"aboutMe", "birthday", "hireDate", "interests", "mySite", "pastProjects",
	"preferredName", "responsibilities", "schools", "skills", "mailboxSettings",
}

// unsupportedComplex lists complex or navigation user properties that have
// no sensible text form for a user profile property.
var unsupportedComplex = []string{
	"assignedLicenses", "assignedPlans", "authorizationInfo", "customSecurityAttributes",
	"directReports", "identities", "licenseAssignmentStates", "memberOf",
	"onPremisesProvisioningErrors", "passwordProfile", "provisionedPlans",
	"signInActivity", "sponsors",
}

// extensionRE matches a directory extension name:
// extension_<application id without dashes>_<attribute name>.
var extensionRE = regexp.MustCompile(`^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$`)

// lookupFold finds name in names ignoring case and returns Graph's spelling.
func lookupFold(names []string, name string) (string, bool) {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return n, true
		}
	}
	return "", false
}

// lookupProp finds a user property ignoring case.
func lookupProp(name string) (string, kind, bool) {
	if k, ok := userProps[name]; ok {
		return name, k, true
	}
	for n, k := range userProps {
		if strings.EqualFold(n, name) {
			return n, k, true
		}
	}
	return "", 0, false
}

// suggest returns the known name closest to name when it is close enough to
// be a plausible typo, or "".
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3 // accept at most two edits
	lower := ""
	for _, c := range candidates {
		// The distance is at least the difference in length: a name far
		// longer than every candidate (a pasted document, say) costs
		// nothing. (A candidate as far as the best one may still win the
		// tie, which keeps the answer independent of the order.)
		if diff := len(name) - len(c); diff > bestDist || -diff > bestDist {
			continue
		}
		if lower == "" {
			lower = strings.ToLower(name)
		}
		if d := editDistance(lower, strings.ToLower(c)); d < bestDist || d == bestDist && c < best {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// propNames returns the names of userProps, for suggestions.
func propNames() []string {
	names := make([]string, 0, len(userProps))
	for n := range userProps {
		names = append(names, n)
	}
	return names
}
