package graph

import (
	"container/list"
	"context"
	"fmt"
	"slices"

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

func (r *managerResolver) resolve(ctx context.Context, batch []profile.User) error {
	var missing []string
	for _, u := range batch {
		if ref, ok := u.Props["manager"].(managerRef); ok {
			if _, hit := r.cache.get(string(ref)); !hit && !slices.Contains(missing, string(ref)) {
				missing = append(missing, string(ref))
			}
		}
	}
	for len(missing) > 0 {
		n := min(batchSize, len(missing))
		if err := r.fetch(ctx, missing[:n]); err != nil {
			return err
		}
		missing = missing[n:]
	}
	for _, u := range batch {
		if ref, ok := u.Props["manager"].(managerRef); ok {
			vals, _ := r.cache.get(string(ref))
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
func (r *managerResolver) fetch(ctx context.Context, ids []string) error {
	cfg := &users.UserItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UserItemRequestBuilderGetQueryParameters{Select: r.sel},
	}
	batch := msgraphgocore.NewBatchRequest(r.c.adapter)
	itemIDs := make(map[string]string, len(ids))
	for _, id := range ids {
		ri, err := r.c.svc.Users().ByUserId(id).ToGetRequestInformation(ctx, cfg)
		if err != nil {
			return fmt.Errorf("building manager lookup: %w", err)
		}
		item, err := batch.AddBatchRequestStep(*ri)
		if err != nil {
			return fmt.Errorf("building manager batch: %w", err)
		}
		itemIDs[*item.GetId()] = id
	}
	bctx, cancel := r.c.bounded(ctx)
	defer cancel()
	resp, err := batch.Send(bctx, r.c.adapter)
	if err != nil {
		return fmt.Errorf("looking up managers: %w", classify(err))
	}
	statuses := resp.GetStatusCodes()
	for itemID, id := range itemIDs {
		switch status := statuses[itemID]; {
		case status == 404:
			r.cache.put(id, nil)
		case status >= 200 && status < 300:
			u, err := msgraphgocore.GetBatchResponseById[models.Userable](resp, itemID, models.CreateUserFromDiscriminatorValue)
			if err != nil {
				return fmt.Errorf("reading manager %s: %w", id, err)
			}
			r.cache.put(id, managerProps(u, r.sel))
		default:
			u, err := r.c.svc.Users().ByUserId(id).Get(bctx, cfg)
			if err != nil {
				if e, ok := classify(err).(*Error); ok && e.Status == 404 {
					r.cache.put(id, nil)
					continue
				}
				return fmt.Errorf("looking up manager %s: %w", id, classify(err))
			}
			r.cache.put(id, managerProps(u, r.sel))
		}
	}
	return nil
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
