package graph

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	abstractions "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/profile"
)

// plannedRange is a range of the full read and how many users $count said
// it holds (-1: not counted).
type plannedRange struct {
	UPNRange
	count int
}

// boundAlphabet holds the characters bounds are made of, in the order
// bounds are placed in: printable ASCII but '@' and upper case (Graph
// compares UPNs case-insensitively [inferred], and bounds are compared
// lower-cased). The order only places bounds; completeness never depends
// on it (see SplitUPNs).
var boundAlphabet = func() string {
	var b strings.Builder
	for c := byte('!'); c <= '~'; c++ {
		if c != '@' && (c < 'A' || c > 'Z') {
			b.WriteByte(c)
		}
	}
	return b.String()
}()

// digit is c's place in boundAlphabet, 1-based; 0 for a character outside it.
func digit(c byte) int { return strings.IndexByte(boundAlphabet, c) + 1 }

// midBound returns an '@'-free bound strictly between lo and hi in the
// lower-cased byte order ("" lo is the lowest string; hiOpen: no upper
// end), to split a range that $count found too large. It bisects the
// alphabet at the first place the two differ, one character deeper when
// they differ by one there. ok is false when no such bound exists (or lo
// or hi holds characters outside the alphabet where it matters).
func midBound(lo, hi string, hiOpen bool) (string, bool) {
	var b strings.Builder
	for i := 0; i < 64; i++ {
		a := 0
		if i < len(lo) {
			if a = digit(lo[i]); a == 0 {
				return "", false
			}
		}
		z := len(boundAlphabet) + 1 // above every character: the open end
		if !hiOpen {
			if i >= len(hi) {
				return "", false // hi ends here: nothing fits between
			}
			if z = digit(hi[i]); z == 0 {
				return "", false
			}
		}
		switch {
		case a > z:
			return "", false // lo is above hi
		case a == z:
			b.WriteByte(lo[i])
			continue
		case z-a >= 2:
			b.WriteByte(boundAlphabet[(a+z)/2-1])
			return b.String(), true
		case a == 0: // lo ended, hi has the first character here
			b.WriteByte(boundAlphabet[0])
			lo = "" // anything from here on is above lo
			hi, i = hi[i+1:], -1
			if hi == "" {
				return "", false
			}
			continue
		default: // adjacent characters: stay with lo's, go one deeper
			b.WriteByte(lo[i])
			lo, i, hiOpen = lo[i+1:], -1, true
		}
	}
	return "", false
}

// sampleUPNs reads the first page of GET /users?$select=userPrincipalName
// &$top=999: in the directory's own order (object ids), which says nothing
// of names, so it is a fair sample to place bounds. more reports whether
// the tenant has more users than the page.
//
// Within a range, the same request with the range's $filter samples it.
func (c *Client) sampleUPNs(ctx context.Context, r UPNRange) (sample []string, more bool, err error) {
	u, err := c.rangeURL(ctx, profile.Selection{}, r, []string{"userPrincipalName"}, 999)
	if err != nil {
		return nil, false, err
	}
	var p page
	if err := c.getPage(ctx, u, nil, &p); err != nil {
		return nil, false, err
	}
	for _, s := range p.users {
		if upn, ok := s.user.Props["userPrincipalName"].(string); ok {
			sample = append(sample, upn)
		}
	}
	return sample, p.nextLink != "", nil
}

// count asks GET /users/$count?$filter=… (an advanced query: ConsistencyLevel:
// eventual; learn.microsoft.com/graph/aad-advanced-queries). The answer is
// eventually consistent: good to balance ranges, never to decide who is read.
func (c *Client) count(ctx context.Context, filter string) (int, error) {
	h := abstractions.NewRequestHeaders()
	h.Add("ConsistencyLevel", "eventual")
	cfg := &users.CountRequestBuilderGetRequestConfiguration{Headers: h}
	if filter != "" {
		cfg.QueryParameters = &users.CountRequestBuilderGetQueryParameters{Filter: &filter}
	}
	rctx, cancel := c.bounded(ctx)
	defer cancel()
	n, err := c.svc.Users().Count().Get(rctx, cfg)
	if err != nil {
		return 0, classify(err)
	}
	if n == nil {
		return 0, fmt.Errorf("graph: users/$count answered nothing")
	}
	return int(*n), nil
}

// planRanges cuts the UPN space for a full read into about 4 ranges per
// reader: bounds at the quantiles of a sample, then every range counted
// and any holding more than twice its share split at midBound and counted
// again (within a budget of requests), largest first, so readers that take
// the next range when done finish together. Counting failures only cost
// balance: the ranges stay complete.
func (c *Client) planRanges(ctx context.Context) ([]plannedRange, error) {
	sample, more, err := c.sampleUPNs(ctx, UPNRange{})
	if err != nil {
		return nil, fmt.Errorf("sampling user names: %w", err)
	}
	if !more {
		// The whole tenant fits in one page: one range, no filter.
		return []plannedRange{{count: len(sample)}}, nil
	}
	want := c.parallelism * 4
	var out []plannedRange
	for _, r := range SplitUPNs(sample, want) {
		out = append(out, plannedRange{UPNRange: r, count: -1})
	}
	if err := c.countAll(ctx, out); err != nil {
		c.log.Warn("counting users per range failed; ranges are read unbalanced", "err", err)
		return out, nil
	}
	total := 0
	for _, r := range out {
		total += r.count
	}
	share := max(total/want, 100)
	budget := want * 8
	for round := 0; round < 16 && budget > 0; round++ {
		// Split every range over twice its share, in place, and count the
		// pieces together. Where names crowd (user0…, employee numbers) the
		// pieces come from a sample of the range itself; a piece that comes
		// out empty is merged with its neighbour below.
		var heavy []int
		for i, r := range out {
			if r.count > 2*share {
				heavy = append(heavy, i)
			}
		}
		if len(heavy) == 0 {
			break
		}
		pieces := make([][]plannedRange, len(out))
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, c.parallelism)
		for _, i := range heavy {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				p := c.split(ctx, out[i], (out[i].count+share-1)/share)
				mu.Lock()
				pieces[i] = p
				mu.Unlock()
			}()
		}
		wg.Wait()
		var next, counted []plannedRange
		for i, r := range out {
			if len(pieces[i]) < 2 || len(counted)+len(pieces[i]) > budget {
				next = append(next, r)
				continue
			}
			next = append(next, pieces[i]...)
			counted = append(counted, pieces[i]...)
		}
		if len(counted) == 0 {
			break
		}
		budget -= len(counted)
		if err := c.countAll(ctx, counted); err != nil {
			c.log.Warn("counting users per range failed; ranges are read as far as balanced", "err", err)
			for i := range next {
				if next[i].count < 0 {
					next[i].count = share // unknown: read as it is
				}
			}
			out = next
			break
		}
		n := map[UPNRange]int{}
		for _, r := range counted {
			n[r.UPNRange] = r.count
		}
		for i := range next {
			if v, ok := n[next[i].UPNRange]; ok {
				next[i].count = v
			}
		}
		out = merge(next, share)
	}
	out = merge(out, share)
	slices.SortStableFunc(out, func(a, b plannedRange) int { return b.count - a.count })
	return out, nil
}

// split cuts a range into about k chained pieces (not counted yet): at the
// quantiles of a sample of the range when the sample has bounds inside it,
// else in two at midBound.
func (c *Client) split(ctx context.Context, r plannedRange, k int) []plannedRange {
	var bounds []string
	if sample, _, err := c.sampleUPNs(ctx, r.UPNRange); err == nil {
		for _, p := range SplitUPNs(sample, k) {
			if b := p.Hi; b != "" && b > r.Lo && (r.Hi == "" || b < r.Hi) {
				bounds = append(bounds, b)
			}
		}
	}
	if len(bounds) == 0 {
		b, ok := midBound(r.Lo, r.Hi, r.Hi == "")
		if !ok {
			return nil
		}
		bounds = []string{b}
	}
	out := []plannedRange{{UPNRange{r.Lo, bounds[0]}, -1}}
	for i := 0; i+1 < len(bounds); i++ {
		out = append(out, plannedRange{UPNRange{bounds[i], bounds[i+1]}, -1})
	}
	return append(out, plannedRange{UPNRange{bounds[len(bounds)-1], r.Hi}, -1})
}

// merge joins neighbouring ranges (chained: one's Hi is the next one's Lo)
// while together they hold no more than share users. The union of two
// chained ranges is the range from the first's Lo to the second's Hi (no
// UPN equals the bound between them), so merging never loses anyone.
func merge(rs []plannedRange, share int) []plannedRange {
	var out []plannedRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Hi == r.Lo && out[n-1].Hi != "" &&
			out[n-1].count >= 0 && r.count >= 0 && out[n-1].count+r.count <= share {
			out[n-1].Hi = r.Hi
			out[n-1].count += r.count
			continue
		}
		out = append(out, r)
	}
	return out
}

// countAll counts the users of each range, parallelism at a time.
func (c *Client) countAll(ctx context.Context, rs []plannedRange) error {
	sem := make(chan struct{}, c.parallelism)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range rs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := c.count(ctx, rs[i].Filter())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			rs[i].count = n
		}()
	}
	wg.Wait()
	return first
}
