package graph

import (
	"container/list"
	"context"
	"fmt"

	msgraphgocore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/profile"
)

// batchSize is Graph's limit of requests in one $batch.
const batchSize = 20

// managerResolver replaces managerRef placeholders with the manager's
// selected properties. Managers are shared by many users, so answers are
// kept in a bounded LRU cache and misses are fetched 20 at a time with
// $batch.
type managerResolver struct {
	c     *Client
	sel   []string
	cache *lru
}

func newManagerResolver(c *Client, sel []string) *managerResolver {
	return &managerResolver{c: c, sel: sel, cache: newLRU(c.cacheMax)}
}

// resolve settles every managerRef of batch. The values this batch needs
// are held in a map of its own while it is resolved: a batch with more
// managers than the cache holds would otherwise see some evicted by the
// fetches of others before it reads them.
func (r *managerResolver) resolve(ctx context.Context, batch []profile.User) error {
	var missing []string
	need := map[string][]any{}
	for _, u := range batch {
		if ref, ok := u.Props["manager"].(managerRef); ok {
			if _, seen := need[string(ref)]; seen {
				continue
			}
			vals, hit := r.cache.get(string(ref))
			need[string(ref)] = vals
			if !hit {
				missing = append(missing, string(ref))
			}
		}
	}
	for len(missing) > 0 {
		n := min(batchSize, len(missing))
		got, err := r.fetch(ctx, missing[:n])
		if err != nil {
			return err
		}
		for id, vals := range got {
			need[id] = vals
		}
		missing = missing[n:]
	}
	for _, u := range batch {
		if ref, ok := u.Props["manager"].(managerRef); ok {
			vals := need[string(ref)]
			if vals == nil {
				u.Props["manager"] = nil // the manager no longer exists
				continue
			}
			m := make(map[string]any, len(r.sel))
			for i, k := range r.sel {
				if vals[i] != absent {
					m[k] = vals[i]
				}
			}
			u.Props["manager"] = m
		}
	}
	return nil
}

// absent marks a manager property Graph did not return (never set).
var absent = new(struct{})

// fetch looks up managers with one $batch request; items Graph could not
// answer in the batch (throttled) are fetched one by one, with the SDK's
// retry handler waiting out Retry-After.
func (r *managerResolver) fetch(ctx context.Context, ids []string) (map[string][]any, error) {
	got := make(map[string][]any, len(ids))
	put := func(id string, vals []any) {
		got[id] = vals
		r.cache.put(id, vals)
	}
	cfg := &users.UserItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UserItemRequestBuilderGetQueryParameters{Select: r.sel},
	}
	batch := msgraphgocore.NewBatchRequest(r.c.adapter)
	itemIDs := make(map[string]string, len(ids))
	for _, id := range ids {
		ri, err := r.c.svc.Users().ByUserId(id).ToGetRequestInformation(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("building manager lookup: %w", err)
		}
		item, err := batch.AddBatchRequestStep(*ri)
		if err != nil {
			return nil, fmt.Errorf("building manager batch: %w", err)
		}
		itemIDs[*item.GetId()] = id
	}
	bctx, cancel := r.c.bounded(ctx)
	defer cancel()
	resp, err := batch.Send(bctx, r.c.adapter)
	if err != nil {
		return nil, fmt.Errorf("looking up managers: %w", classify(err))
	}
	statuses := resp.GetStatusCodes()
	for itemID, id := range itemIDs {
		switch status := statuses[itemID]; {
		case status == 404:
			put(id, nil)
		case status >= 200 && status < 300:
			u, err := msgraphgocore.GetBatchResponseById[models.Userable](resp, itemID, models.CreateUserFromDiscriminatorValue)
			if err != nil {
				return nil, fmt.Errorf("reading manager %s: %w", id, err)
			}
			put(id, managerProps(u, r.sel))
		default:
			u, err := r.c.svc.Users().ByUserId(id).Get(bctx, cfg)
			if err != nil {
				if e, ok := classify(err).(*Error); ok && e.Status == 404 {
					put(id, nil)
					continue
				}
				return nil, fmt.Errorf("looking up manager %s: %w", id, classify(err))
			}
			put(id, managerProps(u, r.sel))
		}
	}
	return got, nil
}

// managerProps keeps only what the mapping asked of the manager, as values
// in the order of sel: the cache holds thousands of these, and a slice costs
// a fraction of a map.
func managerProps(u models.Userable, sel []string) []any {
	pu, _, _ := convertUser(u)
	out := make([]any, len(sel))
	for i, k := range sel {
		if v, ok := pu.Props[k]; ok {
			out[i] = v
		} else {
			out[i] = absent
		}
	}
	return out
}

// lru is a small least-recently-used cache of manager values; a nil value
// records "no such user".
type lru struct {
	max   int
	order *list.List
	items map[string]*list.Element
}

type lruEntry struct {
	key string
	val []any
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (c *lru) get(k string) ([]any, bool) {
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).val, true
}

func (c *lru) put(k string, v []any) {
	if e, ok := c.items[k]; ok {
		e.Value.(*lruEntry).val = v
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{key: k, val: v})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry).key)
	}
}
