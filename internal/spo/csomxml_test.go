package spo

import (
	"context"
	"encoding/xml"
	"net/http"
	"strings"
	"testing"

	"github.com/profilesync/profilesync/internal/profile"
)

// The golden files of TestCSOMRequests were written from this client's own
// output; this test checks the same requests against the CSOM wire rules
// the reference documents (graph-and-sharepoint.md §5.2, from the CLI for
// Microsoft 365 fixtures and SharePoint's JSOM serializer), independently
// of the golden files: it parses the XML and asserts its elements.

type csomRequest struct {
	XMLName     xml.Name
	Actions     []csomNode
	ObjectPaths []csomNode
}

type csomList struct {
	Items []csomNode `xml:",any"`
}

type csomNode struct {
	XMLName      xml.Name
	ID           string      `xml:"Id,attr"`
	ObjectPathID string      `xml:"ObjectPathId,attr"`
	ParentID     string      `xml:"ParentId,attr"`
	Name         string      `xml:"Name,attr"`
	TypeID       string      `xml:"TypeId,attr"`
	Params       []csomParam `xml:"Parameters>Parameter"`
	Inner        []csomNode  `xml:",any"`
}

type csomParam struct {
	Type  string `xml:"Type,attr"`
	Text  string `xml:",chardata"`
	Props []struct {
		Name string `xml:"Name,attr"`
		Type string `xml:"Type,attr"`
		Text string `xml:",chardata"`
	} `xml:"Property"`
}

const (
	csomNS        = "http://schemas.microsoft.com/sharepoint/clientquery/2009"
	office365Type = "{e45fd516-a408-4ca4-b6dc-268e2f1f0f83}"
)

func captureCSOM(t *testing.T, response string, call func(*Client) error) csomRequest {
	t.Helper()
	resp := readTestdata(t, response)
	srv := newFake(t, func(w http.ResponseWriter, _ recorded, _ int) { reply(w, 200, "application/json", resp) })
	c, _, _ := testClient(t, srv.URL, nil)
	if err := call(c); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		XMLName     xml.Name
		Actions     csomList `xml:"Actions"`
		ObjectPaths csomList `xml:"ObjectPaths"`
	}
	if err := xml.Unmarshal(srv.requests()[0].Body, &raw); err != nil {
		t.Fatalf("request body is not XML: %v", err)
	}
	req := csomRequest{XMLName: raw.XMLName, Actions: raw.Actions.Items, ObjectPaths: raw.ObjectPaths.Items}
	if req.XMLName.Local != "Request" || req.XMLName.Space != csomNS {
		t.Errorf("root %v, want Request in %s", req.XMLName, csomNS)
	}
	return req
}

// tenantID returns the id of the Office365Tenant constructor.
func tenantID(t *testing.T, req csomRequest) string {
	t.Helper()
	for _, n := range req.ObjectPaths {
		if n.XMLName.Local == "Constructor" && n.TypeID == office365Type {
			return n.ID
		}
	}
	t.Fatalf("no Office365Tenant constructor (TypeId %s) among the object paths", office365Type)
	return ""
}

func TestCSOMRequestsFollowTheWireRules(t *testing.T) {
	t.Run("queue", func(t *testing.T) {
		src := "https://contoso.sharepoint.com/sites/hr/Shared Documents/upa/import-20250101.json"
		pm := map[string]string{"Office": "OfficeCode", "City": "City", "R&D <x>": `"Q'"`}
		req := captureCSOM(t, "queue_ok.json", func(c *Client) error {
			_, err := c.QueueImport(context.Background(), profile.CloudID, "IdName", pm, src)
			return err
		})
		tenant := tenantID(t, req)
		var m *csomNode
		for i, n := range req.Actions {
			if n.XMLName.Local == "Method" && n.Name == "QueueImportProfileProperties" {
				m = &req.Actions[i]
			}
		}
		if m == nil || m.ObjectPathID != tenant {
			t.Fatalf("no QueueImportProfileProperties method on the tenant object: %+v", req.Actions)
		}
		p := m.Params
		if len(p) != 4 || p[0].Type != "Enum" || p[0].Text != "1" || p[1].Type != "String" || p[1].Text != "IdName" ||
			p[2].Type != "Dictionary" || p[3].Type != "String" || p[3].Text != src {
			t.Fatalf("parameters %+v, want Enum 1 (CloudId), String IdName, Dictionary, String sourceUri with its spaces", p)
		}
		got := map[string]string{}
		for _, e := range p[2].Props {
			if e.Type != "String" {
				t.Errorf("dictionary entry %q has type %q, want String", e.Name, e.Type)
			}
			got[e.Name] = e.Text
		}
		if len(got) != len(pm) {
			t.Errorf("dictionary %v, want %v", got, pm)
		}
		for k, v := range pm {
			if got[k] != v {
				t.Errorf("dictionary[%q] = %q, want %q", k, got[k], v)
			}
		}
	})
	t.Run("job", func(t *testing.T) {
		req := captureCSOM(t, "job_submitted.json", func(c *Client) error {
			_, err := c.Job(context.Background(), strings.ToUpper(jobGUID))
			return err
		})
		tenant := tenantID(t, req)
		var method string
		for _, n := range req.ObjectPaths {
			if n.XMLName.Local == "Method" && n.Name == "GetImportProfilePropertyJob" && n.ParentID == tenant {
				method = n.ID
				if len(n.Params) != 1 || n.Params[0].Type != "Guid" || n.Params[0].Text != "{"+jobGUID+"}" {
					t.Errorf("job id parameter %+v, want Guid {%s} (braced, lower case)", n.Params, jobGUID)
				}
			}
		}
		if method == "" {
			t.Fatal("no GetImportProfilePropertyJob object path on the tenant")
		}
		query := false
		for _, n := range req.Actions {
			if n.XMLName.Local == "Query" && n.ObjectPathID == method {
				query = len(n.Inner) == 1 && n.Inner[0].XMLName.Local == "Query"
			}
		}
		if !query {
			t.Errorf("no Query action on the job object: %+v", req.Actions)
		}
	})
	t.Run("jobs", func(t *testing.T) {
		req := captureCSOM(t, "jobs.json", func(c *Client) error { _, err := c.Jobs(context.Background()); return err })
		tenant := tenantID(t, req)
		var method string
		for _, n := range req.ObjectPaths {
			if n.XMLName.Local == "Method" && n.Name == "GetImportProfilePropertyJobs" && n.ParentID == tenant && len(n.Params) == 0 {
				method = n.ID
			}
		}
		children := false
		for _, n := range req.Actions {
			if n.XMLName.Local == "Query" && n.ObjectPathID == method && method != "" {
				for _, in := range n.Inner {
					children = children || in.XMLName.Local == "ChildItemQuery"
				}
			}
		}
		if method == "" || !children {
			t.Errorf("want a GetImportProfilePropertyJobs object path queried with a ChildItemQuery: %+v / %+v", req.ObjectPaths, req.Actions)
		}
	})
	t.Run("delete", func(t *testing.T) {
		req := captureCSOM(t, "delete_true.json", func(c *Client) error { _, err := c.DeleteJob(context.Background(), "{"+jobGUID+"}"); return err })
		tenant := tenantID(t, req)
		ok := false
		for _, n := range req.Actions {
			if n.XMLName.Local == "Method" && n.Name == "DeleteImportProfilePropertiesJob" && n.ObjectPathID == tenant {
				ok = len(n.Params) == 1 && n.Params[0].Type == "Guid" && n.Params[0].Text == "{"+jobGUID+"}"
			}
		}
		if !ok {
			t.Errorf("no DeleteImportProfilePropertiesJob(Guid {%s}) on the tenant: %+v", jobGUID, req.Actions)
		}
	})
}
