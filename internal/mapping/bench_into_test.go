package mapping

import (
	"fmt"
	"testing"

	"github.com/profilesync/profilesync/internal/importfile"
)

// BenchmarkApplyIntoExample is BenchmarkApplyExample through ApplyInto
// with one record reused, as a caller done with each record can.
func BenchmarkApplyIntoExample(b *testing.B) {
	m := exampleMapping(b)
	users := benchUsers(4096)
	b.ReportAllocs()
	_, cpu0 := perUserStart()
	var rec Record
	i := 0
	for b.Loop() {
		if skip := m.ApplyInto(&rec, users[i&4095]); skip != NotSkipped {
			b.Fatal(skip)
		}
		i++
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkApplyIntoPutClose is BenchmarkApplyPutClose with the record
// reused through ApplyInto.
func BenchmarkApplyIntoPutClose(b *testing.B) {
	const n = 100_000
	m := exampleMapping(b)
	users := benchUsers(4096)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-c436-4f95-b7c0-4f8ce89dca5e", i*2654435761%(1<<32))
	}
	dir := b.TempDir()
	before, cpu0 := perUserStart()
	for b.Loop() {
		w := importfile.NewWriter(dir, importfile.Limits{})
		kvs := make([]importfile.KV, 0, len(m.Properties))
		var rec Record
		for i, key := range keys {
			u := users[i&4095]
			u.ID = key
			if skip := m.ApplyInto(&rec, u); skip != NotSkipped {
				w.Drop(u.ID, u.Seq, 1)
				continue
			}
			kvs = kvs[:0]
			for _, kv := range rec.Values {
				kvs = append(kvs, importfile.KV{Name: kv.Name, Value: kv.Value})
			}
			if err := w.Put(importfile.Appearance{Key: u.ID, Seq: u.Seq, ID: rec.ID, Values: kvs}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
		w.Abort()
	}
	perUser(b, before, cpu0, n)
}
