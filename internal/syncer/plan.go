package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/profilesync/profilesync/internal/importfile"
	"github.com/profilesync/profilesync/internal/mapping"
	"github.com/profilesync/profilesync/internal/profile"
)

// DefaultPlanLimit is how many users a plan lists by default.
const DefaultPlanLimit = 100

// Plan is what a run would do, computed without changing anything: no
// upload, no job, no run record, no delta link (a dry run).
type Plan struct {
	Mode         Mode              `json:"mode"`
	Reason       string            `json:"reason,omitempty"`
	MappingHash  string            `json:"mappingHash"`
	Read         int               `json:"usersRead"`
	Sent         int               `json:"usersToSend"`
	Properties   int               `json:"propertiesToSend"` // key/value pairs incl. the id, as SharePoint counts them
	Skipped      map[string]int    `json:"usersSkipped"`
	Unchanged    int               `json:"usersUnchanged,omitempty"` // not sent: SharePoint has their values (fingerprint store)
	Fingerprints string            `json:"fingerprints,omitempty"`   // why unchanged users are not told apart, when they are not
	Unknown      []string          `json:"unknownUsers,omitempty"`
	Users        []PlanUser        `json:"users"`        // the first Limit users to send, with their values
	SkippedUsers []PlanSkip        `json:"skippedUsers"` // the first Limit skipped users, with the reason
	Cleared      map[string]int    `json:"cleared"`      // SharePoint property -> users whose value would be cleared
	Limit        int               `json:"limit"`
	Truncated    bool              `json:"truncated"` // more users than Limit to send or skip
	PropertyMap  map[string]string `json:"propertyMap"`
}

// planRow is what a plan remembers of a row it counted, 16 bytes per user
// (a dry run reads every user but holds none of them): its property count,
// and the properties it clears as bits in the mapping's order (a mapping of
// more than 64 properties keeps the first 64; later ones stay counted).
type planRow struct {
	props   int
	cleared uint64
}

// PlanUser is one user a run would send.
type PlanUser struct {
	ID     string            `json:"id"`
	UPN    string            `json:"userPrincipalName,omitempty"`
	Values map[string]string `json:"values"`
}

// PlanSkip is one user a run would skip.
type PlanSkip struct {
	ID     string `json:"id"`
	UPN    string `json:"userPrincipalName,omitempty"`
	Reason string `json:"reason"`
}

// Plan computes a dry run: it reads users exactly as Sync would (from the
// stored delta link, which Graph lets a client read again) and maps them,
// but changes nothing in SharePoint or in storage and takes no lock.
func (e *Engine) Plan(ctx context.Context, opts Options, limit int) (*Plan, error) {
	if limit <= 0 {
		limit = DefaultPlanLimit
	}
	run := &Run{}
	opts.progress = newReporter(opts.Progress, e.Source)
	m, _, _, link, err := e.prepare(ctx, run, opts)
	if err != nil {
		return nil, err
	}
	opts.fingerprints = e.fingerprints(ctx, e.log(), run, opts, m)
	fp := opts.fingerprints
	p := &Plan{Mode: run.Mode, Reason: run.Reason, MappingHash: run.MappingHash, Cleared: map[string]int{},
		Users: []PlanUser{}, SkippedUsers: []PlanSkip{}, Limit: limit, PropertyMap: m.PropertyMap()}
	upn := func(u profile.User) string { s, _ := u.Props["userPrincipalName"].(string); return s }
	// A user Graph repeats counts once, as last seen, as in a real run. The
	// plan keeps, per row, only its property count and the properties it
	// clears, so that a replaced row's counts can be taken back; the listed
	// users (at most limit) are replaced in place.
	var (
		latest  *importfile.Latest
		rowInfo []planRow
		listed  map[string]int // user key -> index in p.Users or p.SkippedUsers (-1-i)
	)
	reset := func() {
		latest, rowInfo, listed = importfile.NewLatest(), nil, map[string]int{}
		p.Users, p.SkippedUsers, p.Cleared, p.Properties, p.Truncated = p.Users[:0], p.SkippedUsers[:0], map[string]int{}, 0, false
	}
	reset()
	unlist := func(key string) {
		i, ok := listed[key]
		if !ok {
			return
		}
		delete(listed, key)
		if i >= 0 {
			p.Users[i].ID = "" // removed below
		} else {
			p.SkippedUsers[-1-i].ID = ""
		}
	}
	bit := make(map[string]uint, len(m.Properties))
	for i, prop := range m.Properties {
		if i < 64 {
			bit[prop.Target] = uint(i)
		}
	}
	forget := func(replaced bool, old uint32) {
		if !replaced {
			return
		}
		r := rowInfo[old]
		p.Properties -= r.props
		for i, prop := range m.Properties {
			if i < 64 && r.cleared&(1<<i) != 0 {
				p.Cleared[prop.Target]--
			}
		}
	}
	var skip func(u profile.User, reason mapping.SkipReason)
	s := sink{
		record: func(u profile.User, rec mapping.Record) error {
			key := u.ID
			if key == "" {
				key = rec.ID
			}
			if _, unchanged, _ := fp.row(u, rec); unchanged {
				skip(profile.User{ID: key, Seq: u.Seq, Props: u.Props}, skipUnchanged)
				return errUnchanged
			}
			newest, replaced, old := latest.Row(key, u.Seq, uint32(len(rowInfo)))
			if !newest {
				return nil
			}
			forget(replaced, old)
			unlist(key)
			r := planRow{props: 1 + len(rec.Values)}
			vals := make(map[string]string, len(rec.Values))
			for _, kv := range rec.Values {
				vals[kv.Name] = kv.Value
				if kv.Value == "" {
					p.Cleared[kv.Name]++
					if b, ok := bit[kv.Name]; ok {
						r.cleared |= 1 << b
					}
				}
			}
			rowInfo = append(rowInfo, r)
			p.Properties += r.props
			if len(p.Users) < limit {
				listed[key] = len(p.Users)
				p.Users = append(p.Users, PlanUser{ID: rec.ID, UPN: upn(u), Values: vals})
			} else {
				p.Truncated = true
			}
			return nil
		},
		skip: func(u profile.User, reason mapping.SkipReason) {
			skip(u, reason)
		},
	}
	// skip drops a user (unchanged users are counted, not listed).
	skip = func(u profile.User, reason mapping.SkipReason) {
		newest, replaced, old := latest.Drop(u.ID, u.Seq, skipTag(reason))
		if !newest {
			return
		}
		forget(replaced, old)
		unlist(u.ID)
		switch {
		case reason == skipUnchanged:
		case len(p.SkippedUsers) < limit:
			listed[u.ID] = -1 - len(p.SkippedUsers)
			p.SkippedUsers = append(p.SkippedUsers, PlanSkip{ID: u.ID, UPN: upn(u), Reason: string(reason)})
		default:
			p.Truncated = true
		}
	}
	_, err = e.collect(ctx, m, run, opts, link, s)
	if err != nil && link != "" && errors.Is(err, profile.ErrDeltaExpired) {
		run.Mode, run.Reason = ModeFull, "delta link expired or reset by Graph"
		p.Mode, p.Reason = run.Mode, run.Reason
		reset()
		fp.reset()
		_, err = e.collect(ctx, m, run, opts, "", s)
	}
	if err != nil {
		return nil, fmt.Errorf("reading users from Graph: %w", err)
	}
	p.Users = slices.DeleteFunc(p.Users, func(u PlanUser) bool { return u.ID == "" })
	p.SkippedUsers = slices.DeleteFunc(p.SkippedUsers, func(u PlanSkip) bool { return u.ID == "" })
	for name, n := range p.Cleared {
		if n <= 0 {
			delete(p.Cleared, name)
		}
	}
	countUsers(run, latest.Stats())
	p.Read, p.Sent, p.Skipped, p.Unknown = run.Read, run.Sent, run.Skipped, run.Unknown
	p.Unchanged, p.Fingerprints = run.Unchanged, run.Fingerprints
	sort.Slice(p.Users, func(i, k int) bool { return p.Users[i].ID < p.Users[k].ID })
	return p, nil
}
