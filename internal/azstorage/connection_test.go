package azstorage

import (
	"strings"
	"testing"
)

func TestParseConnection(t *testing.T) {
	const explicit = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;" +
		"BlobEndpoint=http://127.0.0.1:1234/devstoreaccount1;QueueEndpoint=http://127.0.0.1:1235/devstoreaccount1;"
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantErrs  []string // substrings every one of which the error must contain
		notInErr  []string // substrings the error must not contain (secrets)
		blob      string
		queue     string
		needsCred bool
		clientID  string
	}{
		{
			name:  "dev storage",
			env:   map[string]string{"S": "UseDevelopmentStorage=true"},
			blob:  "http://127.0.0.1:10000/devstoreaccount1",
			queue: "http://127.0.0.1:10001/devstoreaccount1",
		},
		{
			name:  "dev storage with trailing semicolon and proxy",
			env:   map[string]string{"S": "usedevelopmentstorage=true;DevelopmentStorageProxyUri=http://x"},
			blob:  "http://127.0.0.1:10000/devstoreaccount1",
			queue: "http://127.0.0.1:10001/devstoreaccount1",
		},
		{
			name:  "explicit endpoints",
			env:   map[string]string{"S": explicit},
			blob:  "http://127.0.0.1:1234/devstoreaccount1",
			queue: "http://127.0.0.1:1235/devstoreaccount1",
		},
		{
			name:  "account name and key only",
			env:   map[string]string{"S": "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn"},
			blob:  "https://acct1.blob.core.chinacloudapi.cn",
			queue: "https://acct1.queue.core.chinacloudapi.cn",
		},
		{
			name:  "connection string wins over identity settings",
			env:   map[string]string{"S": explicit, "S__accountName": "other"},
			blob:  "http://127.0.0.1:1234/devstoreaccount1",
			queue: "http://127.0.0.1:1235/devstoreaccount1",
		},
		{
			name:      "identity by account name",
			env:       map[string]string{"S__accountName": "acct1", "S__credential": "managedidentity", "S__clientId": "cid"},
			blob:      "https://acct1.blob.core.windows.net",
			queue:     "https://acct1.queue.core.windows.net",
			needsCred: true,
			clientID:  "cid",
		},
		{
			name: "identity by service URIs",
			env: map[string]string{
				"S__blobServiceUri": "https://b.example/", "S__queueServiceUri": "https://q.example",
				"S__credential": "ManagedIdentity",
			},
			blob:      "https://b.example",
			queue:     "https://q.example",
			needsCred: true,
		},
		{
			name:      "explicit URI overrides account name",
			env:       map[string]string{"S__accountName": "acct1", "S__queueServiceUri": "https://q.example"},
			blob:      "https://acct1.blob.core.windows.net",
			queue:     "https://q.example",
			needsCred: true,
		},
		{
			name:     "missing",
			env:      map[string]string{},
			wantErrs: []string{"S is not set", "S__accountName"},
		},
		{
			name:     "garbage",
			env:      map[string]string{"S": "this is not a connection string"},
			wantErrs: []string{"S: connection string is not a list of key=value pairs"},
			notInErr: []string{"this is not"},
		},
		{
			name:     "no account or endpoints",
			env:      map[string]string{"S": "AccountKey=c2VjcmV0"},
			wantErrs: []string{"S: connection string has no AccountName or BlobEndpoint", "no AccountName or QueueEndpoint", "AccountKey but no AccountName"},
			notInErr: []string{"c2VjcmV0"},
		},
		{
			name:     "no key",
			env:      map[string]string{"S": "AccountName=acct1"},
			wantErrs: []string{"S: connection string has no AccountKey or SharedAccessSignature"},
		},
		{
			name:     "bad endpoint and protocol",
			env:      map[string]string{"S": "DefaultEndpointsProtocol=ftp;AccountName=a;AccountKey=k;BlobEndpoint=127.0.0.1:1"},
			wantErrs: []string{"DefaultEndpointsProtocol \"ftp\"", "BlobEndpoint: \"127.0.0.1:1\" is not an absolute http(s) URL"},
		},
		{
			name: "identity problems all listed",
			env: map[string]string{
				"S__accountName": "Bad_Name", "S__blobServiceUri": "not a url", "S__credential": "clientsecret",
			},
			wantErrs: []string{
				"S__accountName: \"Bad_Name\" is not a storage account name",
				"S__blobServiceUri: \"not a url\"",
				"S__credential: \"clientsecret\" is not supported",
			},
		},
		{
			name:     "identity without queue",
			env:      map[string]string{"S__blobServiceUri": "https://b.example"},
			wantErrs: []string{"S__queueServiceUri is not set (nor S__accountName)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConnection("S", func(k string) string { return tc.env[k] })
			if len(tc.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("no error, want one containing %q", tc.wantErrs)
				}
				for _, w := range tc.wantErrs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				for _, w := range tc.notInErr {
					if strings.Contains(err.Error(), w) {
						t.Errorf("error %q leaks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.BlobURL() != tc.blob || c.QueueURL() != tc.queue {
				t.Errorf("blob %q queue %q, want %q %q", c.BlobURL(), c.QueueURL(), tc.blob, tc.queue)
			}
			if c.NeedsCredential() != tc.needsCred {
				t.Errorf("NeedsCredential = %v, want %v", c.NeedsCredential(), tc.needsCred)
			}
			if c.ClientID() != tc.clientID {
				t.Errorf("ClientID = %q, want %q", c.ClientID(), tc.clientID)
			}
			if s := c.String(); strings.Contains(s, "AccountKey") || strings.Contains(s, DevAccountKey) {
				t.Errorf("String() leaks the key: %s", s)
			}
		})
	}
}

func TestNewClientsNeedCredential(t *testing.T) {
	c, err := ParseConnection("S", func(k string) string {
		return map[string]string{"S__accountName": "acct1"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBlobs(c, nil, "c"); err == nil || !strings.Contains(err.Error(), "needs a credential") {
		t.Errorf("NewBlobs without credential: err = %v", err)
	}
	if _, err := NewQueue(c, nil, "q"); err == nil || !strings.Contains(err.Error(), "needs a credential") {
		t.Errorf("NewQueue without credential: err = %v", err)
	}
	if _, err := NewBlobs(Connection{}, nil, "c"); err == nil {
		t.Errorf("NewBlobs with a zero Connection: no error")
	}
}
