package graph

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"

	"github.com/profilesync/profilesync/internal/profile"
)

// joinBucket is about how many managers one bucket of the join holds in
// memory at a time (a variable so tests can force many buckets).
var joinBucket = 8192

// joiner gives the users of an initial round their manager's properties
// without holding the tenant in memory. In an initial round every manager is
// also one of the users, so instead of looking managers up, the round is
// spilled to disk: users waiting for a manager, and every user's properties
// as a possible manager. Both are then split into buckets by manager id, few
// enough managers per bucket to fit in memory, and joined bucket by bucket.
// Memory stays at one bucket however many users there are; the disk holds
// the round once (about what the import file takes).
type joiner struct {
	dir            string
	sel            []string
	users, cands   *spillFile
	nUsers, nCands int
}

// spillFile is a temporary file of JSON lines.
type spillFile struct {
	f *os.File
	w *bufio.Writer
}

func newSpill(dir, pattern string, bufSize int) (*spillFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("creating a spill file: %w", err)
	}
	return &spillFile{f: f, w: bufio.NewWriterSize(f, bufSize)}, nil
}

func (s *spillFile) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = s.w.Write(b)
	return err
}

// writeLine copies a line read back from another spill file. The line is
// the scanner's own buffer: it is written as it is, then the newline, never
// appended to (which would write into the scanner's buffer).
func (s *spillFile) writeLine(line []byte) error {
	if _, err := s.w.Write(line); err != nil {
		return err
	}
	return s.w.WriteByte('\n')
}

// each reads the file back, line by line.
func (s *spillFile) each(fn func([]byte) error) error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	if _, err := s.f.Seek(0, 0); err != nil {
		return err
	}
	sc := bufio.NewScanner(s.f)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

func (s *spillFile) remove() {
	if s != nil {
		s.f.Close()
		os.Remove(s.f.Name())
	}
}

type spilledUser struct {
	User    profile.User `json:"u"`
	Manager string       `json:"m"`
}

type spilledCand struct {
	ID     string `json:"id"`
	Values []any  `json:"v"`
	Has    []bool `json:"h"` // Values[i] was returned (false: never set)
}

func newJoiner(dir string, sel []string) (*joiner, error) {
	j := &joiner{dir: dir, sel: sel}
	var err error
	if j.users, err = newSpill(dir, "profilesync-users-*.jsonl", 64*1024); err != nil {
		return nil, err
	}
	if j.cands, err = newSpill(dir, "profilesync-managers-*.jsonl", 64*1024); err != nil {
		j.users.remove()
		return nil, err
	}
	return j, nil
}

// candidate records a user's properties as a possible manager.
func (j *joiner) candidate(u profile.User) error {
	c := spilledCand{ID: u.ID, Values: make([]any, len(j.sel)), Has: make([]bool, len(j.sel))}
	for i, k := range j.sel {
		c.Values[i], c.Has[i] = u.Props[k]
	}
	j.nCands++
	return j.cands.write(c)
}

// wait parks a user until its manager is known.
func (j *joiner) wait(u profile.User, managerID string) error {
	j.nUsers++
	return j.users.write(spilledUser{User: u, Manager: managerID})
}

func bucketOf(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// finish joins the parked users with their managers and hands them to fn.
// Managers not among the round's users (rare) are looked up with r.
func (j *joiner) finish(ctx context.Context, r *managerResolver, fn func(profile.User) error) error {
	if j.nUsers == 0 {
		return nil
	}
	n := max(1, (j.nCands+joinBucket-1)/joinBucket)
	userParts, candParts := make([]*spillFile, n), make([]*spillFile, n)
	defer func() {
		for i := range n {
			userParts[i].remove()
			candParts[i].remove()
		}
	}()
	for i := range n {
		var err error
		// Small buffers: there is one pair of files per bucket.
		if userParts[i], err = newSpill(j.dir, "profilesync-users-part-*.jsonl", 4096); err != nil {
			return err
		}
		if candParts[i], err = newSpill(j.dir, "profilesync-managers-part-*.jsonl", 4096); err != nil {
			return err
		}
	}
	// Split both by manager id; raw lines are copied, only the key is decoded.
	err := j.users.each(func(line []byte) error {
		var k struct {
			M string `json:"m"`
		}
		if err := json.Unmarshal(line, &k); err != nil {
			return err
		}
		return userParts[bucketOf(k.M, n)].writeLine(line)
	})
	if err != nil {
		return fmt.Errorf("splitting the spilled users: %w", err)
	}
	err = j.cands.each(func(line []byte) error {
		var k struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(line, &k); err != nil {
			return err
		}
		return candParts[bucketOf(k.ID, n)].writeLine(line)
	})
	if err != nil {
		return fmt.Errorf("splitting the spilled managers: %w", err)
	}
	for i := range n {
		managers := map[string]map[string]any{}
		err := candParts[i].each(func(line []byte) error {
			var c spilledCand
			if err := json.Unmarshal(line, &c); err != nil {
				return err
			}
			m := make(map[string]any, len(j.sel))
			for k, name := range j.sel {
				if k < len(c.Has) && c.Has[k] {
					m[name] = c.Values[k]
				}
			}
			managers[c.ID] = m
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading spilled managers: %w", err)
		}
		// Users whose manager is not among the round's users (rare) wait here
		// and are looked up together.
		var missing []profile.User
		flush := func() error {
			if err := r.resolve(ctx, missing); err != nil {
				return err
			}
			for _, u := range missing {
				if err := fn(u); err != nil {
					return err
				}
			}
			missing = missing[:0]
			return nil
		}
		err = userParts[i].each(func(line []byte) error {
			var su spilledUser
			if err := json.Unmarshal(line, &su); err != nil {
				return err
			}
			if su.User.Props == nil {
				su.User.Props = map[string]any{}
			}
			if m, ok := managers[su.Manager]; ok {
				su.User.Props["manager"] = m
				return fn(su.User)
			}
			su.User.Props["manager"] = managerRef(su.Manager)
			if missing = append(missing, su.User); len(missing) >= batchSize*5 {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			return err
		}
		candParts[i].remove()
		userParts[i].remove()
		candParts[i], userParts[i] = nil, nil
	}
	return nil
}

func (j *joiner) close() {
	j.users.remove()
	j.cands.remove()
}
