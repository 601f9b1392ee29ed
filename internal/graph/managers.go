package graph

import (
	"context"
	"fmt"

	"github.com/profilesync/profilesync/internal/profile"
)

// managers is one way of settling the "manager" property of the users a
// read hands over (see profile.User): each read picks the one that fits
// what its pages carry.
type managers interface {
	// settle hands the users of one page to emit with their manager
	// settled, or keeps some back to hand over in finish.
	settle(ctx context.Context, users []sighting, emit func(profile.User) error) error
	// finish hands over the users settle kept back.
	finish(ctx context.Context, emit func(profile.User) error) error
	close()
}

// pickManagers returns the strategy for a read: none when the mapping
// draws nothing from the manager; expanded when the pages carry
// $expand=manager; otherwise a join on disk for an initial delta round
// (every manager is one of the round's users) and lookups for incremental
// rounds (a handful of users).
func (c *Client) pickManagers(sel profile.Selection, expanded, initialDelta bool) (managers, error) {
	switch {
	case len(sel.Manager) == 0:
		return noManagers{}, nil
	case expanded:
		return expandedManagers{}, nil
	case initialDelta:
		j, err := newJoiner(c.tempDir, sel.Manager)
		if err != nil {
			return nil, err
		}
		return &joinManagers{j: j, r: newManagerResolver(c, sel.Manager)}, nil
	}
	return &lookupManagers{r: newManagerResolver(c, sel.Manager), changed: map[string]string{}}, nil
}

// noManagers hands users over as they are.
type noManagers struct{}

func (noManagers) settle(_ context.Context, users []sighting, emit func(profile.User) error) error {
	for i := range users {
		if err := emit(users[i].user); err != nil {
			return err
		}
	}
	return nil
}
func (noManagers) finish(context.Context, func(profile.User) error) error { return nil }
func (noManagers) close()                                                 {}

// expandedManagers settles users whose page carried $expand=manager: the
// manager's properties came along; a user without a manager gets nil, so
// the mapping never mistakes "no manager" for "unknown".
type expandedManagers struct{}

func (expandedManagers) settle(_ context.Context, users []sighting, emit func(profile.User) error) error {
	for i := range users {
		u := users[i].user
		if !u.Removed {
			if m, ok := u.Props["manager"].(map[string]any); !ok || len(m) == 0 {
				u.Props["manager"] = nil
			}
		}
		if err := emit(u); err != nil {
			return err
		}
	}
	return nil
}
func (expandedManagers) finish(context.Context, func(profile.User) error) error { return nil }
func (expandedManagers) close()                                                 {}

// lookupManagers settles the users of an incremental delta round, which
// carry manager@delta only when the manager changed (microsoft-graph-
// explorer-v4#4018): a changed manager is looked up (20 at a time, cached);
// a user without the annotation keeps the manager an earlier sighting of
// this round reported, else the key stays absent (unknown: SharePoint keeps
// what it has).
type lookupManagers struct {
	r       *managerResolver
	changed map[string]string // user id → manager id seen in this round
	batch   []profile.User
}

func (m *lookupManagers) settle(ctx context.Context, users []sighting, emit func(profile.User) error) error {
	m.batch = m.batch[:0]
	for i := range users {
		s := &users[i]
		u := s.user
		if !u.Removed {
			id, known := s.managerID, s.managerKnown
			if known {
				m.changed[u.ID] = id
			} else if prev, ok := m.changed[u.ID]; ok {
				id, known = prev, true
			}
			switch {
			case id != "":
				u.Props["manager"] = managerRef(id)
			case known:
				u.Props["manager"] = nil
			}
		}
		m.batch = append(m.batch, u)
	}
	if err := m.r.resolve(ctx, m.batch); err != nil {
		return err
	}
	for _, u := range m.batch {
		if err := emit(u); err != nil {
			return err
		}
	}
	return nil
}
func (m *lookupManagers) finish(context.Context, func(profile.User) error) error { return nil }
func (m *lookupManagers) close()                                                 {}

// joinManagers settles the users of an initial delta round by joining them
// with their managers on disk (see joiner): users without a manager go on
// at once, the others once the round is read.
type joinManagers struct {
	j *joiner
	r *managerResolver
}

func (m *joinManagers) settle(_ context.Context, users []sighting, emit func(profile.User) error) error {
	for i := range users {
		s := &users[i]
		u := s.user
		if !u.Removed {
			if err := m.j.candidate(u); err != nil {
				return fmt.Errorf("spilling users: %w", err)
			}
			if s.managerID != "" {
				if err := m.j.wait(u, s.managerID); err != nil {
					return fmt.Errorf("spilling users: %w", err)
				}
				continue
			}
			u.Props["manager"] = nil
		}
		if err := emit(u); err != nil {
			return err
		}
	}
	return nil
}

func (m *joinManagers) finish(ctx context.Context, emit func(profile.User) error) error {
	return m.j.finish(ctx, m.r, emit)
}

func (m *joinManagers) close() { m.j.close() }
