// Package azstorage adapts Azure Blob and Queue storage (or Azurite) to what
// profilesync needs: small named documents with ETag preconditions, a lease
// used as a lock, and delayed queue messages in the base64 text the Functions
// queue trigger expects. It knows nothing about sync semantics.
//
// Errors callers act on are translated here: a missing blob wraps
// fs.ErrNotExist, a failed precondition wraps profile.ErrStale and a lock held
// by someone else wraps profile.ErrBusy.
package azstorage

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// DevAccountName and DevAccountKey are Azurite's well-known development
// account, used when a setting says UseDevelopmentStorage=true.
const (
	DevAccountName = "devstoreaccount1"
	DevAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// devConnectionString is what UseDevelopmentStorage=true stands for: the Go
// SDKs do not understand the short form, so it is expanded here.
const devConnectionString = "DefaultEndpointsProtocol=http;AccountName=" + DevAccountName +
	";AccountKey=" + DevAccountKey +
	";BlobEndpoint=http://127.0.0.1:10000/" + DevAccountName +
	";QueueEndpoint=http://127.0.0.1:10001/" + DevAccountName + ";"

// Connection says how to reach one storage account: either a connection string
// (shared key or SAS, used as is) or blob and queue service URLs to be used
// with a token credential (managed identity). Build it with ParseConnection.
type Connection struct {
	setting          string // the prefix it was read from, for messages
	connectionString string // "" for identity-based connections
	blobURL          string // service URL, without trailing slash
	queueURL         string
	clientID         string // user-assigned identity, optional
}

// ParseConnection reads the storage connection named prefix (normally
// "AzureWebJobsStorage") the way the Functions host does:
//
//   - <prefix> holds a connection string. "UseDevelopmentStorage=true" stands
//     for the Azurite development account on 127.0.0.1:10000 (blob) and
//     127.0.0.1:10001 (queue); DevelopmentStorageProxyUri is not supported.
//   - Otherwise the connection is identity-based: <prefix>__blobServiceUri and
//     <prefix>__queueServiceUri, or <prefix>__accountName standing for
//     https://<account>.blob.core.windows.net and .queue.core.windows.net
//     (explicit URIs win). <prefix>__credential may only be
//     "managedidentity"; <prefix>__clientId picks a user-assigned identity.
//
// Both a blob and a queue endpoint are required. Every problem found is
// returned (errors.Join), each naming the setting. getenv has the shape of
// os.Getenv.
func ParseConnection(prefix string, getenv func(string) string) (Connection, error) {
	c := Connection{setting: prefix}
	if cs := strings.TrimSpace(getenv(prefix)); cs != "" {
		return c.parseConnectionString(cs)
	}

	var errs []error
	name := func(key string) string { return prefix + "__" + key }
	account := strings.TrimSpace(getenv(name("accountName")))
	blob := strings.TrimSpace(getenv(name("blobServiceUri")))
	queue := strings.TrimSpace(getenv(name("queueServiceUri")))
	if account == "" && blob == "" && queue == "" {
		return Connection{}, fmt.Errorf("%s is not set (want a connection string, or %s for identity-based access)",
			prefix, name("accountName"))
	}
	if account != "" && !validAccountName(account) {
		errs = append(errs, fmt.Errorf("%s: %q is not a storage account name (3-24 lowercase letters and digits)",
			name("accountName"), account))
	}
	for _, s := range []struct {
		key, service string
		value        *string
	}{
		{"blobServiceUri", "blob", &blob},
		{"queueServiceUri", "queue", &queue},
	} {
		switch {
		case *s.value != "":
			u, err := serviceURL(*s.value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name(s.key), err))
			}
			*s.value = u
		case account != "":
			*s.value = "https://" + account + "." + s.service + ".core.windows.net"
		default:
			errs = append(errs, fmt.Errorf("%s is not set (nor %s)", name(s.key), name("accountName")))
		}
	}
	if cred := strings.TrimSpace(getenv(name("credential"))); cred != "" && !strings.EqualFold(cred, "managedidentity") {
		errs = append(errs, fmt.Errorf("%s: %q is not supported (want managedidentity)", name("credential"), cred))
	}
	if err := errors.Join(errs...); err != nil {
		return Connection{}, err
	}
	c.blobURL, c.queueURL = blob, queue
	c.clientID = strings.TrimSpace(getenv(name("clientId")))
	return c, nil
}

// parseConnectionString checks a connection string the way the azblob and
// azqueue SDKs will read it, so configuration mistakes surface at start-up
// with the setting's name rather than at the first request.
func (c Connection) parseConnectionString(cs string) (Connection, error) {
	if strings.EqualFold(strings.TrimRight(cs, ";"), "UseDevelopmentStorage=true") ||
		strings.HasPrefix(strings.ToLower(cs), "usedevelopmentstorage=true;") {
		cs = devConnectionString
	}
	fields := map[string]string{}
	var errs []error
	for part := range strings.SplitSeq(strings.TrimRight(cs, ";"), ";") {
		key, value, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(key) == "" {
			// Never echo the part: it may be (part of) a key.
			return Connection{}, fmt.Errorf("%s: connection string is not a list of key=value pairs separated by ';'", c.setting)
		}
		fields[key] = value
	}
	protocol := fields["DefaultEndpointsProtocol"]
	if protocol == "" {
		protocol = "https"
	}
	if protocol != "http" && protocol != "https" {
		errs = append(errs, fmt.Errorf("%s: connection string has DefaultEndpointsProtocol %q (want http or https)", c.setting, protocol))
	}
	suffix := fields["EndpointSuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	}
	account := fields["AccountName"]
	endpoint := func(key, service string) string {
		if v, ok := fields[key]; ok {
			u, err := serviceURL(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: connection string %s: %w", c.setting, key, err))
			}
			return u
		}
		if account == "" {
			errs = append(errs, fmt.Errorf("%s: connection string has no AccountName or %s", c.setting, key))
			return ""
		}
		return protocol + "://" + account + "." + service + "." + suffix
	}
	c.blobURL = endpoint("BlobEndpoint", "blob")
	c.queueURL = endpoint("QueueEndpoint", "queue")
	_, hasKey := fields["AccountKey"]
	_, hasSAS := fields["SharedAccessSignature"]
	switch {
	case hasKey && account == "":
		errs = append(errs, fmt.Errorf("%s: connection string has an AccountKey but no AccountName", c.setting))
	case !hasKey && !hasSAS:
		errs = append(errs, fmt.Errorf("%s: connection string has no AccountKey or SharedAccessSignature", c.setting))
	}
	if err := errors.Join(errs...); err != nil {
		return Connection{}, err
	}
	c.connectionString = cs
	return c, nil
}

// serviceURL checks that s is an absolute http(s) URL and trims a trailing
// slash.
func serviceURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return strings.TrimRight(s, "/"), nil
}

func validAccountName(s string) bool {
	if len(s) < 3 || len(s) > 24 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// NeedsCredential reports whether the connection is identity-based, in which
// case NewBlobs and NewQueue need a token credential.
func (c Connection) NeedsCredential() bool { return c.connectionString == "" }

// ClientID returns the client ID of the user-assigned managed identity
// (<prefix>__clientId), or "" for the system-assigned one.
func (c Connection) ClientID() string { return c.clientID }

// BlobURL returns the blob service URL, e.g. https://acct.blob.core.windows.net.
func (c Connection) BlobURL() string { return c.blobURL }

// QueueURL returns the queue service URL.
func (c Connection) QueueURL() string { return c.queueURL }

// String describes the connection for logs without any secret.
func (c Connection) String() string {
	kind := "connection string"
	if c.NeedsCredential() {
		kind = "managed identity"
	}
	return fmt.Sprintf("%s (%s; blob %s; queue %s)", c.setting, kind, c.blobURL, c.queueURL)
}

// clientOptions are the SDK pipeline settings every client uses: a few
// retries with back-off, and a bound on each try so a hung connection cannot
// stall a function invocation.
func clientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{
		Retry: policy.RetryOptions{
			MaxRetries:    4,
			TryTimeout:    30 * time.Second,
			RetryDelay:    500 * time.Millisecond,
			MaxRetryDelay: 8 * time.Second,
		},
	}
}
