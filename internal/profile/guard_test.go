package profile

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestCheckScheme(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"https://contoso.sharepoint.com/sites/hr", true},
		{"http://127.0.0.1:8371/sites/hr", true},
		{"http://127.8.9.10:1", true},
		{"http://localhost:8370", true},
		{"http://LocalHost", true},
		{"http://[::1]:8370", true},
		{"http://contoso.sharepoint.com/sites/hr", false},
		{"http://127.0.0.1.nip.io/", false},
		{"http://10.0.0.1/", false},
		{"ftp://127.0.0.1/", false},
		{"/sites/hr", false},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckScheme(u); (err == nil) != tc.ok {
			t.Errorf("CheckScheme(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func TestPinOrigin(t *testing.T) {
	const origin = "https://graph.microsoft.com"
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"https://graph.microsoft.com/v1.0/users?$skiptoken=x", true},
		{"HTTPS://Graph.Microsoft.COM/v1.0/users", true},
		{"https://graph.microsoft.com:443/v1.0/users", true},
		{"https://graph.microsoft.com:8443/v1.0/users", false},
		{"http://graph.microsoft.com/v1.0/users", false},
		{"https://graph.microsoft.com.evil.example/v1.0/users", false},
		{"https://evil.example/v1.0/users?$deltatoken=secret", false},
		{"https://graph.microsoft.com@evil.example/v1.0/users", false},
		{"https://user@graph.microsoft.com/v1.0/users", false},
		{"//graph.microsoft.com/v1.0/users", false},
		{"/v1.0/users", false},
		{"mailto:graph.microsoft.com", false},
		{"https://evil.example\\@graph.microsoft.com/", false},
		{"", false},
	} {
		err := PinOrigin("link", tc.in, origin)
		if (err == nil) != tc.ok {
			t.Errorf("PinOrigin(%q) = %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrForeignOrigin) {
			t.Errorf("PinOrigin(%q) = %v, want ErrForeignOrigin", tc.in, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("PinOrigin(%q) shows the query: %v", tc.in, err)
		}
		if !strings.Contains(err.Error(), origin) {
			t.Errorf("PinOrigin(%q) does not name the expected origin: %v", tc.in, err)
		}
	}
	err := PinOrigin("link", "https://evil.example:8443/x?y", origin)
	if !strings.Contains(err.Error(), "https://evil.example:8443 is not") {
		t.Errorf("the error does not name the link's origin: %v", err)
	}
	// A long URL is cut short in the message.
	err = PinOrigin("link", "https://evil.example/"+strings.Repeat("é", 10_000), origin)
	if n := len(err.Error()); n > 400 || !strings.Contains(err.Error(), "…") {
		t.Errorf("the error of a 20 kB URL is %d bytes: %.500v", n, err)
	}
}
