package directory

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func loaded(t testing.TB, n int) (*Store, []User) {
	t.Helper()
	users := Generate(n, 1)
	s := NewStore()
	if err := s.Load(users); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s, users
}

func TestGenerateDeterministicAndQuirks(t *testing.T) {
	a, b := Generate(300, 7), Generate(300, 7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("Generate is not deterministic")
	}
	if c := Generate(300, 8); c[0].ID == a[0].ID {
		t.Fatal("different seeds gave the same first id")
	}
	u := a
	tests := []struct {
		name string
		ok   bool
	}{
		{"root has no manager", u[GenRoot].ManagerID == ""},
		{"others have managers", u[299].ManagerID == u[GenManager(299)].ID},
		{"non-latin name", strings.Contains(u[GenNonLatin].Props["displayName"].(string), "李雷")},
		{"non-latin city", u[GenNonLatin].Props["city"] == "Ærøskøbing"},
		{"guest type", u[GenGuest].Props["userType"] == "Guest"},
		{"guest upn", strings.Contains(u[GenGuest].Props["userPrincipalName"].(string), "#EXT#")},
		{"disabled", u[GenDisabled].Props["accountEnabled"] == false},
		{"no mail", u[GenNoMail].Props["mail"] == nil},
		{"special chars", strings.ContainsAny(u[GenSpecial].Props["jobTitle"].(string), "\"\\\n\t") &&
			strings.Contains(u[GenSpecial].Props["jobTitle"].(string), "🚀")},
		{"bare no extension", u[GenBare].Props[CostCenterExt] == nil},
		{"bare org data null", hasNil(u[GenBare].Props, "employeeOrgData")},
		{"greek", strings.HasPrefix(u[GenGreek].Props["displayName"].(string), "Ελένη")},
		{"root extension set", u[GenRoot].Props[CostCenterExt] != nil},
	}
	for _, tc := range tests {
		if !tc.ok {
			t.Errorf("%s: not satisfied", tc.name)
		}
	}
	big := Generate(5000, 3)
	counts := map[string]int{}
	for _, u := range big {
		if u.Props["userType"] == "Guest" {
			counts["guest"]++
		}
		if u.Props["accountEnabled"] == false {
			counts["disabled"]++
		}
		if _, ok := u.Props["mail"]; !ok {
			counts["nomail"]++
		}
	}
	for k, want := range map[string]int{"guest": 250, "disabled": 150, "nomail": 100} {
		if got := counts[k]; got < want/2 || got > want*2 {
			t.Errorf("%s count = %d, want about %d", k, got, want)
		}
	}
}

func hasNil(m map[string]any, k string) bool {
	v, ok := m[k]
	return ok && v == nil
}

func TestLoadGetAndOnPremShape(t *testing.T) {
	s, users := loaded(t, 20)
	got, ok := s.Get(users[3].ID)
	if !ok {
		t.Fatal("Get by id failed")
	}
	if !reflect.DeepEqual(got.Props["businessPhones"], users[3].Props["businessPhones"]) {
		t.Errorf("businessPhones = %v", got.Props["businessPhones"])
	}
	attrs, _ := got.Props["onPremisesExtensionAttributes"].(map[string]any)
	if len(attrs) != 15 || attrs["extensionAttribute15"] != nil || attrs["extensionAttribute1"] != "EA1-3" {
		t.Errorf("onPremisesExtensionAttributes = %v", attrs)
	}
	byUPN, ok := s.Get(strings.ToUpper(users[3].Props["userPrincipalName"].(string)))
	if !ok || byUPN.ID != users[3].ID {
		t.Errorf("Get by UPN = %v, %v", byUPN.ID, ok)
	}
	if err := s.Load(users[:1]); !errors.Is(err, ErrExists) {
		t.Errorf("second Load err = %v, want ErrExists", err)
	}
	if s.Len() != 20 {
		t.Errorf("Len = %d", s.Len())
	}
}

func TestAddValidation(t *testing.T) {
	s, users := loaded(t, 3)
	tests := []struct {
		name string
		u    User
		want error
	}{
		{"no upn", User{Props: map[string]any{"displayName": "x"}}, ErrInvalid},
		{"bad id", User{ID: "nope", Props: map[string]any{"userPrincipalName": "a@x"}}, ErrInvalid},
		{"bad name", User{Props: map[string]any{"userPrincipalName": "a@x", "bad-name": 1.0}}, ErrInvalid},
		{"reserved name", User{Props: map[string]any{"userPrincipalName": "a@x", "id": "x"}}, ErrInvalid},
		{"bad value", User{Props: map[string]any{"userPrincipalName": "a@x", "v": struct{}{}}}, ErrInvalid},
		{"bad onprem key", User{Props: map[string]any{"userPrincipalName": "a@x", "onPremisesExtensionAttributes": map[string]any{"x": "y"}}}, ErrInvalid},
		{"dup upn", User{Props: map[string]any{"userPrincipalName": strings.ToUpper(users[0].Props["userPrincipalName"].(string))}}, ErrExists},
		{"dup id", User{ID: users[1].ID, Props: map[string]any{"userPrincipalName": "b@x"}}, ErrExists},
		{"missing manager", User{ManagerID: "00000000-0000-4000-8000-000000000000", Props: map[string]any{"userPrincipalName": "c@x"}}, ErrNotFound},
		{"ok", User{ManagerID: users[0].ID, Props: map[string]any{"userPrincipalName": "d@x"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Add(tc.u)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && (got.ID == "" || got.ManagerID != users[0].ID) {
				t.Errorf("added user = %+v", got)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	s, users := loaded(t, 10)
	mail := users[1].Props["mail"].(string)
	upn := users[1].Props["userPrincipalName"].(string)
	tests := []struct {
		name   string
		idType int
		value  string
		want   string
	}{
		{"email", 0, strings.ToUpper(mail), users[1].ID},
		{"cloud id", 1, strings.ToUpper(users[1].ID), users[1].ID},
		{"upn", 2, upn, users[1].ID},
		{"unknown", 2, "nobody@x", ""},
		{"bad type", 7, upn, ""},
		{"no mail user by upn", 2, users[GenNoMail].Props["userPrincipalName"].(string), users[GenNoMail].ID},
	}
	for _, tc := range tests {
		got, ok := s.Resolve(tc.idType, tc.value)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: Resolve = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
	if err := s.Delete(users[1].ID, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Resolve(2, upn); ok {
		t.Error("soft-deleted user still resolves")
	}
	if _, err := s.Restore(users[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Resolve(0, mail); !ok {
		t.Error("restored user does not resolve")
	}
}

// collect returns the ids Changes visits in (since, upto].
func collect(s *Store, since, upto int64, limit int) []string {
	var ids []string
	from := 0
	for range 1000 {
		next, more := s.Changes(since, upto, from, limit, func(v View) bool {
			ids = append(ids, v.ID())
			return true
		})
		if !more {
			break
		}
		from = next
	}
	return ids
}

func TestChangesAndVersions(t *testing.T) {
	s, users := loaded(t, 30)
	v0 := s.Version()
	if got := collect(s, v0, v0, 10); len(got) != 0 {
		t.Fatalf("no changes expected, got %v", got)
	}
	title, _, _ := s.Field("JOBTITLE")
	a, b, c := users[10].ID, users[11].ID, users[12].ID
	if _, err := s.Update(a, Patch{Props: map[string]any{"jobTitle": "Boss"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(b, Patch{Props: map[string]any{"mobilePhone": nil}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(a, Patch{Props: map[string]any{"city": "Oslo"}}); err != nil {
		t.Fatal(err)
	}
	// A patch that changes nothing records nothing.
	before := s.Version()
	if _, err := s.Update(a, Patch{Props: map[string]any{"city": "Oslo"}}); err != nil {
		t.Fatal(err)
	}
	if s.Version() != before {
		t.Error("no-op patch bumped the version")
	}
	if err := s.Delete(c, true); err != nil {
		t.Fatal(err)
	}
	got := collect(s, v0, s.Version(), 1)
	want := []string{b, a, c}
	// Hard-deleting c clears the manager of c's reports, which also change.
	if len(got) < 3 || !reflect.DeepEqual(got[:3], want) {
		t.Errorf("changes = %v, want prefix %v", got, want)
	}
	ok := s.View(a, func(v View) {
		if v.Version(title) <= v0 {
			t.Errorf("jobTitle version %d not after %d", v.Version(title), v0)
		}
		if raw, _ := v.Raw(title); raw != `"Boss"` {
			t.Errorf("jobTitle raw = %s", raw)
		}
	})
	if !ok {
		t.Fatal("View(a) not found")
	}
	if s.View(c, func(View) {}) {
		t.Error("hard-deleted user is visible")
	}
	var state State = -1
	s.Scan(strings.Repeat("0", 8), 1<<30, func(v View) bool {
		if v.ID() == c {
			state = v.State()
		}
		return true
	})
	if state != HardDeleted {
		t.Errorf("tombstone state = %v", state)
	}
	if _, err := s.Restore(c); !errors.Is(err, ErrNotFound) {
		t.Errorf("restore of hard-deleted: %v", err)
	}
}

func TestManagerChanges(t *testing.T) {
	s, users := loaded(t, 20)
	u := users[19].ID
	tests := []struct {
		name     string
		key, mgr string
		want     error
	}{
		{"self", u, u, ErrInvalid},
		{"cycle through report", users[1].ID, users[9].ID, ErrInvalid}, // 9 reports to 1
		{"unknown", u, "00000000-0000-4000-8000-000000000001", ErrNotFound},
		{"move", u, users[5].ID, nil},
	}
	for _, tc := range tests {
		_, err := s.Update(tc.key, Patch{ManagerID: &tc.mgr})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	empty := ""
	got, err := s.Update(u, Patch{ManagerID: &empty})
	if err != nil || got.ManagerID != "" {
		t.Fatalf("remove manager: %+v, %v", got, err)
	}
	s.View(u, func(v View) {
		if v.PreviousManagerID() != users[5].ID || v.ManagerVersion() != s.ver {
			t.Errorf("prev manager %q version %d", v.PreviousManagerID(), v.ManagerVersion())
		}
	})
}

func TestTenantRoundTrip(t *testing.T) {
	users := Generate(25, 2)
	var buf bytes.Buffer
	if err := WriteTenant(&buf, users); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTenant(&buf)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore()
	if err := s.Load(back); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(users[GenSpecial].ID)
	if got.Props["jobTitle"] != users[GenSpecial].Props["jobTitle"] {
		t.Errorf("jobTitle = %q", got.Props["jobTitle"])
	}
	if _, err := ReadTenant(strings.NewReader(`{"users":[],"extra":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestEncodeMatchesJSON(t *testing.T) {
	tests := []any{
		"plain", "quote\" back\\ nl\n tab\t bell\x07 emoji🚀 <html>&", "\xff bad utf8",
		true, nil, 1.5, []any{"a", nil}, map[string]any{"b": 1.0, "a": []any{}},
	}
	for _, v := range tests {
		raw, err := encodeProp("x", v)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		var back any
		if err := json.Unmarshal([]byte(raw), &back); err != nil {
			t.Fatalf("%q is not JSON: %v", raw, err)
		}
		want := v
		if s, ok := v.(string); ok {
			want = strings.ToValidUTF8(s, "\ufffd")
		}
		if !reflect.DeepEqual(back, want) {
			t.Errorf("round trip of %#v = %#v", v, back)
		}
		if strings.Contains(raw, `\u003c`) {
			t.Errorf("%s: HTML-escaped", raw)
		}
	}
}
