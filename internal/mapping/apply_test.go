package mapping

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/profilesync/profilesync/internal/profile"
)

// one maps a single SharePoint property "P" to source.
func one(source, sep string) *Mapping {
	return &Mapping{IDType: profile.CloudID, Properties: []Property{{Target: "P", Source: source, Separator: sep}}}
}

func TestApplyConversions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source string
		sep    string
		props  map[string]any
		want   string
	}{
		{"string", "mobilePhone", ",", map[string]any{"mobilePhone": "+1 555 0100"}, "+1 555 0100"},
		{"string kept verbatim", "jobTitle", ",", map[string]any{"jobTitle": " \"Boss\" \\ <&>\n"}, " \"Boss\" \\ <&>\n"},
		{"empty string", "jobTitle", ",", map[string]any{"jobTitle": ""}, ""},
		{"null", "jobTitle", ",", map[string]any{"jobTitle": nil}, ""},
		{"absent", "jobTitle", ",", map[string]any{}, ""},
		{"absent extension", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", ",", map[string]any{}, ""},
		{"collection default separator", "businessPhones", ",", map[string]any{"businessPhones": []any{"1", "2", "3"}}, "1,2,3"},
		{"collection custom separator", "businessPhones", "; ", map[string]any{"businessPhones": []any{"1", "2"}}, "1; 2"},
		{"collection, separator unset", "businessPhones", "", map[string]any{"businessPhones": []any{"1", "2"}}, "1,2"},
		{"collection empty", "businessPhones", ",", map[string]any{"businessPhones": []any{}}, ""},
		{"collection one item", "otherMails", ",", map[string]any{"otherMails": []any{"a@x"}}, "a@x"},
		{"collection mixed items, nulls left out", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", "|",
			map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x": []any{"a", nil, true, 1.5, float64(7)}}, "a|true|1.5|7"},
		{"string slice", "otherMails", ";", map[string]any{"otherMails": []string{"a", "b"}}, "a;b"},
		{"bool true", "accountEnabled", ",", map[string]any{"accountEnabled": true}, "true"},
		{"bool false", "showInAddressList", ",", map[string]any{"showInAddressList": false}, "false"},
		{"integer float", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": float64(42)}, "42"},
		{"fraction", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": 0.1}, "0.1"},
		{"large float", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": 1e21}, "1000000000000000000000"},
		{"negative", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": -3.0}, "-3"},
		{"json.Number", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": json.Number("12345678901234567890")}, "12345678901234567890"},
		{"int", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n", ",", map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_n": 7}, "7"},
		{"date already UTC", "employeeHireDate", ",", map[string]any{"employeeHireDate": "2014-01-01T00:00:00Z"}, "2014-01-01T00:00:00Z"},
		{"date with offset", "employeeHireDate", ",", map[string]any{"employeeHireDate": "2014-01-01T02:30:00+02:00"}, "2014-01-01T00:30:00Z"},
		{"date with fraction", "createdDateTime", ",", map[string]any{"createdDateTime": "2020-05-06T07:08:09.1234567Z"}, "2020-05-06T07:08:09Z"},
		{"date only", "employeeLeaveDateTime", ",", map[string]any{"employeeLeaveDateTime": "2025-12-31"}, "2025-12-31T00:00:00Z"},
		{"date unparseable kept", "employeeHireDate", ",", map[string]any{"employeeHireDate": "soon"}, "soon"},
		{"date-looking text in a plain property kept", "jobTitle", ",", map[string]any{"jobTitle": "2014-01-01T02:30:00+02:00"}, "2014-01-01T02:30:00+02:00"},
		{"time value", "employeeHireDate", ",", map[string]any{"employeeHireDate": time.Date(2014, 1, 1, 2, 0, 0, 0, time.FixedZone("x", 3600))}, "2014-01-01T01:00:00Z"},
		{"complex field", "employeeOrgData.division", ",", map[string]any{"employeeOrgData": map[string]any{"division": "Sales", "costCenter": "CC-42"}}, "Sales"},
		{"complex field null", "employeeOrgData.costCenter", ",", map[string]any{"employeeOrgData": map[string]any{"costCenter": nil}}, ""},
		{"complex null", "employeeOrgData.costCenter", ",", map[string]any{"employeeOrgData": nil}, ""},
		{"complex absent", "onPremisesExtensionAttributes.extensionAttribute1", ",", map[string]any{}, ""},
		{"extension attribute", "onPremisesExtensionAttributes.extensionAttribute15", ",",
			map[string]any{"onPremisesExtensionAttributes": map[string]any{"extensionAttribute15": "x15"}}, "x15"},
		{"object where text expected reads empty", "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x", ",",
			map[string]any{"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_x": map[string]any{"a": "b"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.props["id"] = "u1"
			rec, skip := one(tc.source, tc.sep).Apply(profile.User{ID: "u1", Props: tc.props})
			if skip != NotSkipped {
				t.Fatalf("skipped: %q", skip)
			}
			want := Record{ID: "u1", Values: []KV{{Name: "P", Value: tc.want}}}
			if !reflect.DeepEqual(rec, want) {
				t.Errorf("got %+v, want %+v", rec, want)
			}
		})
	}
}

func TestApplySkips(t *testing.T) {
	member := func(extra map[string]any) map[string]any {
		p := map[string]any{"id": "u1", "userPrincipalName": "a@x", "mail": "a@x.com", "userType": "Member", "accountEnabled": true}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	for _, tc := range []struct {
		name string
		m    Mapping
		u    profile.User
		want SkipReason
	}{
		{"member sent", Mapping{}, profile.User{ID: "u1", Props: member(nil)}, NotSkipped},
		{"deleted", Mapping{IncludeGuests: true, IncludeDisabled: true}, profile.User{ID: "u1", Removed: true}, SkipDeleted},
		{"guest", Mapping{}, profile.User{ID: "u1", Props: member(map[string]any{"userType": "Guest"})}, SkipGuest},
		{"guest lower case", Mapping{}, profile.User{ID: "u1", Props: member(map[string]any{"userType": "guest"})}, SkipGuest},
		{"guest included", Mapping{IncludeGuests: true}, profile.User{ID: "u1", Props: member(map[string]any{"userType": "Guest"})}, NotSkipped},
		{"disabled", Mapping{}, profile.User{ID: "u1", Props: member(map[string]any{"accountEnabled": false})}, SkipDisabled},
		{"disabled included", Mapping{IncludeDisabled: true}, profile.User{ID: "u1", Props: member(map[string]any{"accountEnabled": false})}, NotSkipped},
		{"accountEnabled absent means enabled", Mapping{IDType: profile.CloudID}, profile.User{ID: "u1", Props: map[string]any{"id": "u1"}}, NotSkipped},
		{"accountEnabled null means enabled", Mapping{}, profile.User{ID: "u1", Props: member(map[string]any{"accountEnabled": nil})}, NotSkipped},
		{"guest before disabled", Mapping{}, profile.User{ID: "u1", Props: member(map[string]any{"userType": "Guest", "accountEnabled": false})}, SkipGuest},
		{"deleted before no id", Mapping{IDType: profile.Email}, profile.User{Removed: true}, SkipDeleted},
		{"no id, cloud", Mapping{IDType: profile.CloudID}, profile.User{Props: map[string]any{}}, SkipNoID},
		{"no mail", Mapping{IDType: profile.Email}, profile.User{ID: "u1", Props: member(map[string]any{"mail": nil})}, SkipNoID},
		{"empty mail", Mapping{IDType: profile.Email}, profile.User{ID: "u1", Props: member(map[string]any{"mail": ""})}, SkipNoID},
		{"no upn", Mapping{IDType: profile.PrincipalName}, profile.User{ID: "u1", Props: map[string]any{"id": "u1"}}, SkipNoID},
		{"unknown id type", Mapping{IDType: profile.IDType(9)}, profile.User{ID: "u1", Props: member(nil)}, SkipNoID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, got := tc.m.Apply(tc.u)
			if got != tc.want {
				t.Fatalf("skip = %q, want %q", got, tc.want)
			}
			if got != NotSkipped && !reflect.DeepEqual(rec, Record{}) {
				t.Errorf("skipped user produced a record: %+v", rec)
			}
			if got == NotSkipped && rec.ID == "" {
				t.Errorf("record with an empty id")
			}
		})
	}
}

func TestApplyID(t *testing.T) {
	props := map[string]any{"id": "props-id", "userPrincipalName": "a@contoso.onmicrosoft.com", "mail": "a@contoso.com"}
	for _, tc := range []struct {
		idType profile.IDType
		u      profile.User
		want   string
	}{
		{profile.CloudID, profile.User{ID: "user-id", Props: props}, "props-id"},
		{profile.CloudID, profile.User{ID: "user-id", Props: map[string]any{}}, "user-id"},
		{profile.PrincipalName, profile.User{ID: "user-id", Props: props}, "a@contoso.onmicrosoft.com"},
		{profile.Email, profile.User{ID: "user-id", Props: props}, "a@contoso.com"},
	} {
		t.Run(tc.idType.String(), func(t *testing.T) {
			m := &Mapping{IDType: tc.idType}
			rec, skip := m.Apply(tc.u)
			if skip != NotSkipped || rec.ID != tc.want {
				t.Errorf("got %q (skip %q), want %q", rec.ID, skip, tc.want)
			}
		})
	}
}

func TestApplyManager(t *testing.T) {
	m := &Mapping{IDType: profile.CloudID, Properties: []Property{
		{Target: "A", Source: "jobTitle", Separator: ","},
		{Target: "MgrMail", Source: "manager.mail", Separator: ","},
		{Target: "MgrPhones", Source: "manager.businessPhones", Separator: ";"},
		{Target: "MgrSince", Source: "manager.employeeHireDate", Separator: ","},
		{Target: "Z", Source: "mobilePhone", Separator: ","},
	}}
	base := map[string]any{"id": "u1", "jobTitle": "Dev", "mobilePhone": "1"}
	with := func(k string, v any) map[string]any {
		p := map[string]any{}
		for key, val := range base {
			p[key] = val
		}
		p[k] = v
		return p
	}
	for _, tc := range []struct {
		name  string
		props map[string]any
		want  []KV
	}{
		{"unknown: manager values left out", base, []KV{{"A", "Dev"}, {"Z", "1"}}},
		{"no manager: manager values cleared", with("manager", nil),
			[]KV{{"A", "Dev"}, {"MgrMail", ""}, {"MgrPhones", ""}, {"MgrSince", ""}, {"Z", "1"}}},
		{"manager known", with("manager", map[string]any{
			"@odata.type": "#microsoft.graph.user", "id": "m1", "mail": "boss@x",
			"businessPhones": []any{"1", "2"}, "employeeHireDate": "2001-02-03T04:05:06+01:00",
		}), []KV{{"A", "Dev"}, {"MgrMail", "boss@x"}, {"MgrPhones", "1;2"}, {"MgrSince", "2001-02-03T03:05:06Z"}, {"Z", "1"}}},
		{"manager without the property", with("manager", map[string]any{"id": "m1"}),
			[]KV{{"A", "Dev"}, {"MgrMail", ""}, {"MgrPhones", ""}, {"MgrSince", ""}, {"Z", "1"}}},
		{"manager of an unexpected type reads empty", with("manager", "m1"),
			[]KV{{"A", "Dev"}, {"MgrMail", ""}, {"MgrPhones", ""}, {"MgrSince", ""}, {"Z", "1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, skip := m.Apply(profile.User{ID: "u1", Props: tc.props})
			if skip != NotSkipped {
				t.Fatalf("skipped: %q", skip)
			}
			if !reflect.DeepEqual(rec.Values, tc.want) {
				t.Errorf("values = %+v, want %+v", rec.Values, tc.want)
			}
		})
	}
}

func TestApplyParsedIssueExample(t *testing.T) {
	m, err := Parse([]byte(`{
	  "idType": "CloudId",
	  "properties": {
	    "CostCenter": "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter",
	    "HomePhone": "mobilePhone",
	    "Division": "employeeOrgData.division",
	    "Ext1": "onPremisesExtensionAttributes.extensionAttribute1",
	    "ManagerEmail": "manager.mail",
	    "Phones": "businessPhones",
	    "Phones2": {"source": "BusinessPhones", "separator": " / "}
	  }
	}`))
	if err != nil {
		t.Fatal(err)
	}
	var props map[string]any
	if err := json.Unmarshal([]byte(`{
	  "id": "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", "userPrincipalName": "admin@contoso.com",
	  "accountEnabled": true, "userType": "Member", "mobilePhone": null,
	  "employeeOrgData": {"division": "Sales", "costCenter": "CC-42"},
	  "onPremisesExtensionAttributes": {"extensionAttribute1": "x", "extensionAttribute2": null},
	  "businessPhones": ["425-555-0100", "425-555-0101"],
	  "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter": "4711",
	  "manager": {"id": "99789584-a1e1-4232-90e5-866170e3d4e7", "mail": "boss@contoso.com"}
	}`), &props); err != nil {
		t.Fatal(err)
	}
	rec, skip := m.Apply(profile.User{ID: "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", Props: props})
	want := Record{ID: "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", Values: []KV{
		{"CostCenter", "4711"}, {"Division", "Sales"}, {"Ext1", "x"}, {"HomePhone", ""},
		{"ManagerEmail", "boss@contoso.com"}, {"Phones", "425-555-0100,425-555-0101"},
		{"Phones2", "425-555-0100 / 425-555-0101"},
	}}
	if skip != NotSkipped || !reflect.DeepEqual(rec, want) {
		t.Errorf("got %+v (skip %q)\nwant %+v", rec, skip, want)
	}
}

// BenchmarkApply measures one user through a realistic mapping; allocs/op
// is the allocations per user.
func BenchmarkApply(b *testing.B) {
	m, err := Parse([]byte(`{"properties": {
	  "CostCenter": "extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter",
	  "HomePhone": "mobilePhone", "Division": "employeeOrgData.division",
	  "Ext1": "onPremisesExtensionAttributes.extensionAttribute1", "ManagerEmail": "manager.mail",
	  "Phones": "businessPhones", "Hired": "employeeHireDate", "Title": "jobTitle"}}`))
	if err != nil {
		b.Fatal(err)
	}
	u := profile.User{ID: "u1", Props: map[string]any{
		"id": "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e", "userType": "Member", "accountEnabled": true,
		"mobilePhone": "+1 555 0100", "jobTitle": "Engineer", "employeeHireDate": "2014-01-01T00:00:00Z",
		"employeeOrgData":               map[string]any{"division": "Sales", "costCenter": "CC-42"},
		"onPremisesExtensionAttributes": map[string]any{"extensionAttribute1": "x"},
		"businessPhones":                []any{"425-555-0100", "425-555-0101"},
		"extension_4f1e9c2ab5d34c5e8c1f2a3b4c5d6e7f_costCenter": "4711",
		"manager": map[string]any{"id": "m1", "mail": "boss@contoso.com"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, skip := m.Apply(u); skip != NotSkipped {
			b.Fatal(skip)
		}
	}
}
