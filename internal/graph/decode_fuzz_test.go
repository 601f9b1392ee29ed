package graph

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodePage holds decodePage to decodePageReference (encoding/json):
// both accept the same bodies and decode them alike; what decodePage
// accepts is valid JSON; and Props re-encoded with encoding/json decode
// back to themselves. The seed corpus (testdata/fuzz/FuzzDecodePage) holds
// realistic pages: the simulator's /users with $expand=manager, users/delta
// initial and incremental pages (manager@delta, @removed, deltaLink),
// extension properties, onPremisesExtensionAttributes, businessPhones,
// unicode escapes, guest UPNs with #EXT#, invalid UTF-8.
func FuzzDecodePage(f *testing.F) {
	for _, s := range []string{
		`{"value":[{"id":"a","x":[1,-0,1.5e3,true,false,null,{"@a":1,"b":{}}],"@odata.etag":"W/1"}]}`,
		`{"value":[{"id":"a\ud800\udc00\ud800","manager@delta":[{"id":"m"}]}],"@odata.nextLink":"n"}`,
		`{"value":[{"id":"a","id":"b","b":1,"b":"2"}],"value":[]}`,
		`{"value":null,"@odata.deltaLink":null}`,
		`{"value":[{"id":1}],"@odata.nextLink":{},"value":[{"id":"c"}],"@odata.nextLink":"n"}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got, want page
		errGot := decodePage(body, &got)
		errWant := decodePageReference(body, &want)
		if errWant == nil && errGot != nil {
			t.Fatalf("decodePage: %v; the reference decodes it", errGot)
		}
		if errGot == nil && errWant != nil {
			t.Fatalf("decodePage decodes it; the reference: %v", errWant)
		}
		if errGot != nil {
			if len(got.users) != 0 || got.nextLink != "" || got.deltaLink != "" {
				t.Fatalf("failed decode left %+v", got)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatal("decodePage accepted invalid JSON")
		}
		if diff := samePage(&got, &want); diff != "" {
			t.Fatal(diff)
		}

		// Re-encode every user's Props and decode them again.
		var again bytes.Buffer
		again.WriteString(`{"value":[`)
		for i, s := range got.users {
			b, err := json.Marshal(s.user.Props)
			if err != nil {
				t.Fatalf("user %d: marshalling Props: %v", i, err)
			}
			if i > 0 {
				again.WriteByte(',')
			}
			again.Write(b)
		}
		again.WriteString(`]}`)
		var re page
		if err := decodePage(again.Bytes(), &re); err != nil {
			t.Fatalf("re-encoded page: %v\n%s", err, again.Bytes())
		}
		if len(re.users) != len(got.users) {
			t.Fatalf("re-encoded page: %d users, want %d", len(re.users), len(got.users))
		}
		for i := range re.users {
			if !reflect.DeepEqual(re.users[i].user.Props, got.users[i].user.Props) || re.users[i].user.ID != got.users[i].user.ID {
				t.Fatalf("user %d re-encoded:\n%#v\nwant\n%#v", i, re.users[i].user, got.users[i].user)
			}
		}
	})
}
