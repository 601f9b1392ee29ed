package graphsim

import (
	"regexp"
	"strings"
)

// userProps lists the properties of microsoft.graph.user (v1.0) that can be
// named in $select and $filter, in their camelCase spelling.
var userProps = []string{
	"aboutMe", "accountEnabled", "ageGroup", "assignedLicenses", "assignedPlans", "authorizationInfo",
	"birthday", "businessPhones", "city", "companyName", "consentProvidedForMinor", "country",
	"createdDateTime", "creationType", "customSecurityAttributes", "deletedDateTime", "department",
	"displayName", "employeeHireDate", "employeeId", "employeeLeaveDateTime", "employeeOrgData",
	"employeeType", "externalUserState", "externalUserStateChangeDateTime", "faxNumber", "givenName",
	"hireDate", "id", "identities", "imAddresses", "interests", "isManagementRestricted",
	"isResourceAccount", "jobTitle", "lastPasswordChangeDateTime", "legalAgeGroupClassification",
	"licenseAssignmentStates", "mail", "mailboxSettings", "mailNickname", "mobilePhone", "mySite",
	"officeLocation", "onPremisesDistinguishedName", "onPremisesDomainName",
	"onPremisesExtensionAttributes", "onPremisesImmutableId", "onPremisesLastSyncDateTime",
	"onPremisesProvisioningErrors", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
	"onPremisesSyncEnabled", "onPremisesUserPrincipalName", "otherMails", "passwordPolicies",
	"passwordProfile", "pastProjects", "postalCode", "preferredDataLocation", "preferredLanguage",
	"preferredName", "provisionedPlans", "proxyAddresses", "responsibilities", "schools",
	"securityIdentifier", "serviceProvisioningErrors", "showInAddressList", "signInActivity",
	"signInSessionsValidFromDateTime", "skills", "state", "streetAddress", "surname", "usageLocation",
	"userPrincipalName", "userType",
}

// notInCollections are properties Graph refuses (501) to return from a
// collection such as GET /users.
var notInCollections = map[string]bool{
	"aboutMe": true, "birthday": true, "hireDate": true, "interests": true, "mySite": true,
	"pastProjects": true, "preferredName": true, "responsibilities": true, "schools": true,
	"skills": true, "mailboxSettings": true,
}

// defaultSelect is what Graph returns when $select is absent.
var defaultSelect = []string{
	"businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
	"officeLocation", "preferredLanguage", "surname", "userPrincipalName",
}

var propIndex = func() map[string]string {
	m := make(map[string]string, len(userProps))
	for _, p := range userProps {
		m[strings.ToLower(p)] = p
	}
	return m
}()

var extensionRE = regexp.MustCompile(`(?i)^extension_[0-9a-f]{32}_[A-Za-z0-9_]+$`)

// canonicalProp returns the camelCase name of a user property, matching
// case-insensitively; directory extensions keep the spelling the store
// uses, or the caller's when no user has the extension.
func (s *Server) canonicalProp(name string) (string, bool) {
	if p, ok := propIndex[strings.ToLower(name)]; ok {
		return p, true
	}
	if extensionRE.MatchString(name) {
		if _, c, ok := s.store.Field(name); ok {
			return c, true
		}
		return name, true
	}
	return "", false
}
