package sposim

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	ann = "11111111-1111-1111-1111-111111111111"
	bob = "22222222-2222-2222-2222-222222222222"
	bom = "\xEF\xBB\xBF"
)

var stdMap = [][2]string{{"CostCenter", "CostCenter"}, {"HomePhone", "HomePhone"}, {"City", "Building"}}

func TestJobStatesOnClock(t *testing.T) {
	clock := newClock()
	s := newTestServer(t, func(o *Options) { o.JobStep = 10 * time.Second; o.Now = clock.Now })
	seed(t, s)
	putFile(t, s, libPath+"/upa", "in.json", bom+`{"value":[{"IdName":"`+ann+`","CostCenter":"4711"}]}`)
	id := queue(t, s, 1, stdMap, testBase+libPath+"/upa/in.json")
	for i, want := range []int{stateSubmitted, stateSubmitted, stateProcessing, stateQueued, stateSucceeded, stateSucceeded} {
		if i > 0 {
			clock.Add(5 * time.Second)
			if i > 1 {
				clock.Add(5 * time.Second)
			}
		}
		j, ok := s.Job(id)
		if !ok || j.State != want {
			t.Fatalf("step %d: state %d (%v), want %d", i, j.State, ok, want)
		}
		if _, applied := s.Profile(ann); applied != (want == stateSucceeded) {
			t.Errorf("step %d: profile applied = %v in state %d", i, applied, want)
		}
	}

	// A job read long after queueing goes through every state at once.
	id2 := queue(t, s, 1, stdMap, testBase+libPath+"/upa/in.json")
	clock.Add(time.Hour)
	if j, _ := s.Job(id2); j.State != stateSucceeded || j.Error != 0 {
		t.Errorf("late read: %+v", j)
	}
}

func TestJobStepModes(t *testing.T) {
	content := bom + `{"value":[{"IdName":"` + ann + `","CostCenter":"1"}]}`
	t.Run("synchronous", func(t *testing.T) {
		s := newTestServer(t, func(o *Options) { o.JobStep = 0 })
		putFile(t, s, libPath, "in.json", content)
		id := queue(t, s, 1, stdMap, testBase+libPath+"/in.json")
		if j, _ := s.Job(id); j.State != stateSucceeded {
			t.Errorf("state %d after a synchronous queue", j.State)
		}
	})
	t.Run("manual", func(t *testing.T) {
		clock := newClock()
		s := newTestServer(t, func(o *Options) { o.JobStep = -1; o.Now = clock.Now })
		putFile(t, s, libPath, "in.json", content)
		id := queue(t, s, 1, stdMap, testBase+libPath+"/in.json")
		clock.Add(24 * time.Hour)
		for _, want := range []int{stateSubmitted, stateProcessing, stateQueued, stateSucceeded} {
			if j, _ := s.Job(id); j.State != want {
				t.Fatalf("state %d, want %d", j.State, want)
			}
			if want != stateSucceeded {
				if err := s.AdvanceJob(strings.ToUpper("{" + id + "}")); err != nil {
					t.Fatalf("AdvanceJob: %v", err)
				}
			}
		}
		if err := s.AdvanceJob(id); err == nil {
			t.Error("advancing a finished job succeeded")
		}
		if err := s.AdvanceJob("00000000-0000-0000-0000-000000000000"); err == nil {
			t.Error("advancing an unknown job succeeded")
		}
	})
}

func TestImportOutcomes(t *testing.T) {
	goodID := `"IdName":"` + ann + `"`
	tests := []struct {
		name     string
		content  string
		idType   int
		pmap     [][2]string
		before   func(s *Server)               // after New
		after    func(t *testing.T, s *Server) // after queueing, before processing
		state    int
		errCode  int
		log      []string // nil: no log folder
		logMatch string   // substring the single log line must contain
		profiles map[string]map[string]string
	}{
		{name: "success", content: bom + `{"value":[{` + goodID + `,"CostCenter":"4711","HomePhone":"+1 555","City":"B1"}]}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"CostCenter": "4711", "HomePhone": "+1 555", "Building": "B1"}}},
		{name: "empty string clears", content: bom + `{"value":[{` + goodID + `,"CostCenter":"","HomePhone":"2"}]}`,
			before: func(s *Server) { s.profiles[ann] = map[string]string{"CostCenter": "old", "Division": "keep"} },
			state:  stateSucceeded, profiles: map[string]map[string]string{ann: {"CostCenter": "", "HomePhone": "2", "Division": "keep"}}},
		{name: "other top-level keys ignored", content: `{"odata.metadata":{"x":[1,2]},"value":[{` + goodID + `,"CostCenter":"1"}],"n":null}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"CostCenter": "1"}}},
		{name: "empty value array", content: `{"value":[]}`, state: stateSucceeded, profiles: map[string]map[string]string{}},
		{name: "principal name", idType: 2, content: `{"value":[{"IdName":"ann@contoso.com","CostCenter":"7"}]}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"CostCenter": "7"}}},
		{name: "UTF-8 with BOM", content: bom + `{"value":[{` + goodID + `,"City":"Zürich"}]}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"Building": "Zürich"}}},
		{name: "UTF-8 without BOM is read as Latin-1", content: `{"value":[{` + goodID + `,"City":"Zürich"}]}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"Building": "ZÃ¼rich"}}},
		{name: "Latin-1 without BOM", content: "{\"value\":[{" + goodID + ",\"City\":\"Z\xfcrich\"}]}",
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"Building": "Zürich"}}},
		{name: "UTF-16LE with BOM", content: utf16le(`{"value":[{` + goodID + `,"City":"Zürich 😀"}]}`),
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"Building": "Zürich 😀"}}},
		{name: "escapes", content: bom + `{"value":[{` + goodID + `,"City":"a\\b \"q\" \u00e9"}]}`,
			state: stateSucceeded, profiles: map[string]map[string]string{ann: {"Building": `a\b "q" é`}}},
		{name: "syntax error", content: `{"value":[{"IdName":"x",}]}`,
			state: stateError, errCode: 23, logMatch: "DataFileNotJson\t\tInvalid JSON: invalid character '}' looking for beginning of object key string. Path 'value[0]', line 1, position 25."},
		{name: "non-string value, multi-line", content: "{\n\"value\": [\n  {\"IdName\": 1}\n]}",
			state: stateError, errCode: 23, logMatch: "Path 'value[0].IdName', line 3, position"},
		{name: "null value", content: `{"value":[{` + goodID + `,"CostCenter":null}]}`, state: stateError, errCode: 23, logMatch: "Unexpected token Null"},
		{name: "nested value", content: `{"value":[{` + goodID + `,"CostCenter":["a"]}]}`, state: stateError, errCode: 23, logMatch: "StartArray"},
		{name: "no value array", content: `{"foo":[]}`, state: stateError, errCode: 23, logMatch: "no 'value' array"},
		{name: "value not an array", content: `{"value":{}}`, state: stateError, errCode: 23, logMatch: "expected StartArray. Path 'value'"},
		{name: "record not an object", content: `{"value":["a"]}`, state: stateError, errCode: 23, logMatch: "Path 'value[0]'"},
		{name: "top-level array", content: `[]`, state: stateError, errCode: 23, logMatch: "expected StartObject"},
		{name: "trailing text", content: `{"value":[]} x`, state: stateError, errCode: 23, logMatch: "Additional text"},
		{name: "truncated", content: `{"value":[{"IdName":"a"`, state: stateError, errCode: 23, logMatch: "Unexpected end"},
		{name: "empty file", content: ``, state: stateError, errCode: 23, logMatch: "DataFileNotJson"},
		{name: "unmapped key aborts everything", content: `{"value":[{` + goodID + `,"CostCenter":"1"},{"IdName":"` + bob + `","AboutMe":"x"}]}`,
			state: stateError, errCode: 23,
			log:      []string{"InvalidProperty\t" + bob + "\tProperty 'AboutMe' is not mapped to any property in the user profile application."},
			profiles: map[string]map[string]string{}},
		{name: "per-record problems", content: `{"value":[{"CostCenter":"1"},{"IdName":"","CostCenter":"2"},{"IdName":"nobody","CostCenter":"3"},{` + goodID + `,"CostCenter":"4"}]}`,
			state: stateError, errCode: 30,
			log: []string{
				"MissingIdentity\t\tThe identity is missing for the user object",
				"MissingIdentity\t\tThe identity is missing for the user object",
				"IdentityNotResolvable\tnobody\tUser identity cannot be resolved",
			},
			profiles: map[string]map[string]string{ann: {"CostCenter": "4"}}},
		// techmikael.com/2016/08/why-you-should-use-azure-ad-ids-and-not.html:
		// two rows of one profile fail that profile; the others import.
		{name: "same user twice", content: `{"value":[{` + goodID + `,"CostCenter":"1"},{"IdName":"` + bob + `","CostCenter":"2"},{` + goodID + `,"HomePhone":"3"}]}`,
			before: func(s *Server) { s.profiles[ann] = map[string]string{"CostCenter": "old"} },
			state:  stateError, errCode: 30,
			log: []string{
				"GenericError\t" + ann + "\tSqlException: Input data contains multiple instances of the same single-value property for RecordId " + ann + ".",
				"GenericError\t" + ann + "\tSqlException: Input data contains multiple instances of the same single-value property for RecordId " + ann + ".",
			},
			profiles: map[string]map[string]string{ann: {"CostCenter": "old"}, bob: {"CostCenter": "2"}}},
		{name: "same profile by two identities", idType: 2,
			content: `{"value":[{"IdName":"ann@contoso.com","CostCenter":"1"},{"IdName":"ANN@contoso.com","CostCenter":"2"},{"IdName":"nobody","CostCenter":"3"},{"IdName":"nobody","CostCenter":"4"}]}`,
			state:   stateError, errCode: 30,
			log: []string{
				"GenericError\tann@contoso.com\tSqlException: Input data contains multiple instances of the same single-value property for RecordId " + ann + ".",
				"GenericError\tANN@contoso.com\tSqlException: Input data contains multiple instances of the same single-value property for RecordId " + ann + ".",
				"IdentityNotResolvable\tnobody\tUser identity cannot be resolved",
				"IdentityNotResolvable\tnobody\tUser identity cannot be resolved",
			},
			profiles: map[string]map[string]string{}},
		{name: "too many properties", content: `{"value":[{` + goodID + `,"CostCenter":"1"},{"IdName":"` + bob + `","CostCenter":"2"}]}`,
			before: func(s *Server) { s.maxProps = 3 }, state: stateError, errCode: 22, profiles: map[string]map[string]string{}},
		{name: "exactly the property limit", content: `{"value":[{` + goodID + `,"CostCenter":"1"},{"IdName":"` + bob + `"}]}`,
			before: func(s *Server) { s.maxProps = 3 }, state: stateSucceeded, profiles: map[string]map[string]string{ann: {"CostCenter": "1"}, bob: {}}},
		{name: "file too big", content: `{"value":[]}`, before: func(s *Server) { s.maxFileBytes = 5 }, state: stateError, errCode: 22},
		{name: "file deleted after queueing", content: `{"value":[]}`,
			after: func(t *testing.T, s *Server) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.deleteFileLocked(s.lookupFile(libPath + "/upa/in.json"))
			},
			state: stateError, errCode: 20},
		{name: "internal error", content: `{"value":[]}`,
			after: func(t *testing.T, s *Server) {
				for _, j := range s.Jobs() {
					if err := s.FailJob(j.JobID); err != nil {
						t.Fatal(err)
					}
					if err := s.FailJob(j.JobID); err == nil {
						t.Error("failing a finished job succeeded")
					}
				}
			},
			state: stateError, errCode: 1},
		{name: "file no longer in the tenant (injected)", content: `{"value":[]}`,
			after: func(t *testing.T, s *Server) {
				for _, j := range s.Jobs() {
					if err := s.FailJobWith(j.JobID, 21); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.FailJobWith("00000000-0000-0000-0000-000000000001", 21); err == nil {
					t.Error("failed an unknown job")
				}
			},
			state: stateError, errCode: 21},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, manual)
			seed(t, s)
			if tc.before != nil {
				tc.before(s)
			}
			putFile(t, s, libPath+"/upa", "in.json", tc.content)
			idType := tc.idType
			if idType == 0 {
				idType = 1
			}
			id := queue(t, s, idType, stdMap, testBase+libPath+"/upa/in.json")
			if tc.after != nil {
				tc.after(t, s)
			}
			for i := 0; i < 3; i++ {
				if j, _ := s.Job(id); j.State == stateSucceeded || j.State == stateError {
					break
				}
				if err := s.AdvanceJob(id); err != nil {
					t.Fatal(err)
				}
			}
			j, _ := s.Job(id)
			if j.State != tc.state || j.Error != tc.errCode {
				t.Fatalf("state %d error %d (%q), want %d %d", j.State, j.Error, j.ErrorMessage, tc.state, tc.errCode)
			}
			if (j.ErrorMessage == "") != (tc.errCode == 0) {
				t.Errorf("ErrorMessage %q with error %d", j.ErrorMessage, j.Error)
			}
			logData, hasLog := s.File(libPath + "/" + id + "/" + id + ".log")
			wantLog := tc.log != nil || tc.logMatch != ""
			if hasLog != wantLog || (j.LogFolderURI != "") != wantLog {
				t.Fatalf("log file %v, LogFolderUri %q, want log %v", hasLog, j.LogFolderURI, wantLog)
			}
			if wantLog {
				if j.LogFolderURI != testBase+libPath+"/"+id {
					t.Errorf("LogFolderUri %q", j.LogFolderURI)
				}
				lines := strings.Split(strings.TrimSuffix(string(logData), "\n"), "\n")
				if tc.log != nil && !reflect.DeepEqual(lines, tc.log) {
					t.Errorf("log\n got %q\nwant %q", lines, tc.log)
				}
				if tc.logMatch != "" && (len(lines) != 1 || !strings.Contains(lines[0], tc.logMatch)) {
					t.Errorf("log %q, want one line containing %q", lines, tc.logMatch)
				}
			}
			if tc.profiles != nil {
				got := map[string]map[string]string{}
				for _, oid := range []string{ann, bob} {
					if p, ok := s.Profile(oid); ok {
						got[oid] = p
					}
				}
				if !reflect.DeepEqual(got, tc.profiles) {
					t.Errorf("profiles %v, want %v", got, tc.profiles)
				}
			}
		})
	}
}

// utf16le encodes s as UTF-16LE with a byte order mark.
func utf16le(s string) string {
	var b strings.Builder
	b.WriteString("\xFF\xFE")
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			hi, lo := 0xD800+(r>>10), 0xDC00+(r&0x3FF)
			b.WriteByte(byte(hi))
			b.WriteByte(byte(hi >> 8))
			b.WriteByte(byte(lo))
			b.WriteByte(byte(lo >> 8))
			continue
		}
		b.WriteByte(byte(r))
		b.WriteByte(byte(r >> 8))
	}
	return b.String()
}

func TestNilResolverResolvesToItself(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.Resolver = nil; o.JobStep = 0 })
	putFile(t, s, libPath, "in.json", `{"value":[{"IdName":"x@y","CostCenter":"1"}]}`)
	queue(t, s, 0, stdMap, testBase+libPath+"/in.json")
	if p, ok := s.Profile("x@y"); !ok || p["CostCenter"] != "1" {
		t.Errorf("profile %v, %v", p, ok)
	}
}

func BenchmarkImport(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(bom + `{"value":[`)
	for i := range 10_000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"IdName":"user%d","CostCenter":"%d","HomePhone":"+1 555 %04d"}`, i, i, i)
	}
	sb.WriteString(`]}`)
	s, err := New(Options{BaseURL: testBase, FileDir: b.TempDir(), JobStep: 0})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	if _, err := s.writeFileLocked(s.lookupFolder(libPath), "in.json", []byte(sb.String())); err != nil {
		b.Fatal(err)
	}
	s.mu.Unlock()
	j := &job{idType: 1, idProp: "IdName", propMap: map[string]string{"CostCenter": "CostCenter", "HomePhone": "HomePhone"}, sourceURI: testBase + libPath + "/in.json"}
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	for b.Loop() {
		s.mu.Lock()
		o := s.importLocked(j, true)
		s.mu.Unlock()
		if o.code != 0 {
			b.Fatalf("outcome %+v", o)
		}
	}
}
