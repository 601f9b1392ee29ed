package graph

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	abstractions "github.com/microsoft/kiota-abstractions-go"
)

// maxPageBytes bounds one page's body. Graph's largest pages (999 users
// with every selected property) are a few megabytes.
const maxPageBytes = 64 << 20

// getPage fetches a page (fetchPage) and decodes it into p.
func (c *Client) getPage(ctx context.Context, rawURL string, headers map[string]string, p *page) error {
	if err := c.fetchPage(ctx, rawURL, headers, p); err != nil {
		return err
	}
	return p.decode(rawURL)
}

// decode decodes the page's body (see decodePage).
func (p *page) decode(rawURL string) error {
	if err := decodePage(p.body, p); err != nil {
		return fmt.Errorf("graph: the answer to GET %s is not a page of users: %w", redactURL(rawURL), err)
	}
	return nil
}

// release lets go of what a page holds between uses: its users' values
// (the backing array would otherwise keep the last page's maps alive).
func (p *page) release() {
	clear(p.users[:cap(p.users)])
	p.users = p.users[:0]
}

// fetchPage sends GET rawURL through the SDK's request adapter (the same
// authentication, retry and throttling middleware as every SDK call) and
// keeps the raw answer in p.body, reusing its buffer, for decodePage:
// without kiota's generic parse tree (which cost more than half of a full
// sync's CPU). A URL off the Graph origin (a nextLink or deltaLink from an
// answer or from storage) is refused before anything is sent (see pin).
func (c *Client) fetchPage(ctx context.Context, rawURL string, headers map[string]string, p *page) error {
	if err := c.pin(rawURL); err != nil {
		return err
	}
	ri := abstractions.NewRequestInformationWithMethodAndUrlTemplateAndPathParameters(abstractions.GET, "{+baseurl}", map[string]string{"request-raw-url": rawURL})
	ri.Headers.TryAdd("Accept", "application/json")
	for k, v := range headers {
		ri.Headers.TryAdd(k, v)
	}
	answered := false
	opt := abstractions.NewRequestHandlerOption()
	opt.SetResponseHandler(func(response any, _ abstractions.ErrorMappings) (any, error) {
		resp, ok := response.(*http.Response)
		if !ok || resp == nil {
			return nil, errors.New("graph: no HTTP response")
		}
		defer resp.Body.Close()
		answered = true
		buf := bytes.NewBuffer(p.body[:0])
		n, err := buf.ReadFrom(io.LimitReader(resp.Body, maxPageBytes+1))
		p.body = buf.Bytes()
		if err != nil {
			return nil, fmt.Errorf("graph: reading the answer to GET %s: %w", redactURL(rawURL), err)
		}
		if n > maxPageBytes {
			return nil, fmt.Errorf("graph: the answer to GET %s is larger than %d MiB", redactURL(rawURL), maxPageBytes>>20)
		}
		if resp.StatusCode >= 400 {
			return nil, httpError(resp.StatusCode, buf.Bytes())
		}
		return nil, nil
	})
	ri.AddRequestOptions([]abstractions.RequestOption{opt})
	rctx, cancel := c.bounded(ctx)
	defer cancel()
	if _, err := c.adapter.SendPrimitive(rctx, ri, "[]byte", nil); err != nil {
		return classify(err)
	}
	if !answered {
		return fmt.Errorf("graph: no answer to GET %s", redactURL(rawURL))
	}
	return nil
}

// httpError reads Graph's error document ({"error":{"code","message"}}).
func httpError(status int, body []byte) error {
	var doc struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &doc)
	// Graph's are a line; an answer of up to maxPageBytes could be one.
	e := &Error{Status: status, Code: clip(doc.Error.Code, 200), Message: clip(doc.Error.Message, 500)}
	if e.Message == "" {
		e.Message = cmp.Or(http.StatusText(status), "an HTTP status without a name")
	}
	return e
}

// clip shortens s to at most max bytes, the last ones an ellipsis.
func clip(s string, max int) string {
	const more = "…"
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max-len(more)], "") + more
}

// redactURL drops the query of a link (skip and delta tokens are
// credentials of a sort, and long) for error messages.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// chain returns a function that hands over the pages of one request chain
// in order: the page of firstURL, then one per @odata.nextLink. With
// Prefetch > 0 a goroutine requests the next page while the caller maps and
// writes the current one, so a chain's wall time approaches Graph's own (a
// page is requested only once the one before it has arrived: nextLinks are
// sequential), holding at most Prefetch pages besides the current. After an
// error it returns that error again. Stop the chain by cancelling ctx.
//
// The page handed over stays valid until the next call. slots, when not
// nil, bounds the decoded pages of all chains sharing it (a range read runs
// 16 chains; decoded users take far more memory than the raw answers): a
// page is decoded only once it holds a slot, and gives the slot back when
// the caller is done with it: at the next call, or at done (which a caller
// that shares slots must call when it stops taking pages).
func (c *Client) chain(ctx context.Context, firstURL string, headers map[string]string, slots chan struct{}) (next func() (*page, error), done func()) {
	if c.prefetch <= 0 {
		var cur page
		link := firstURL
		var failed error
		return func() (*page, error) {
			if failed != nil {
				return nil, failed
			}
			if link == "" {
				failed = errors.New("graph: no more pages")
				return nil, failed
			}
			cur.release()
			if err := c.getPage(ctx, link, headers, &cur); err != nil {
				failed = err
				return nil, err
			}
			link = cur.nextLink
			return &cur, nil
		}, func() { cur.release() }
	}
	type result struct {
		p   *page
		err error
	}
	// Pages travel through ch and come back through free once the caller
	// is done with them, so a chain allocates Prefetch+2 pages at most.
	ch := make(chan result, c.prefetch-1)
	free := make(chan *page, c.prefetch+2)
	for range c.prefetch + 2 {
		free <- new(page)
	}
	go func() {
		defer close(ch)
		link := firstURL
		for link != "" {
			var p *page
			select {
			case p = <-free:
			case <-ctx.Done():
				return
			}
			err := c.fetchPage(ctx, link, headers, p)
			if err == nil && slots != nil {
				select {
				case slots <- struct{}{}:
					p.slot = true
				case <-ctx.Done():
					return
				}
			}
			if err == nil {
				err = p.decode(link)
			}
			select {
			case ch <- result{p, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			link = p.nextLink
		}
	}()
	var failed error
	var held *page
	let := func() {
		if held != nil {
			held.release()
			if held.slot {
				held.slot = false
				<-slots
			}
			free <- held
			held = nil
		}
	}
	return func() (*page, error) {
		let()
		if failed != nil {
			return nil, failed
		}
		r, ok := <-ch
		if !ok {
			failed = ctx.Err()
			if failed == nil {
				failed = errors.New("graph: no more pages")
			}
			return nil, failed
		}
		if r.err != nil {
			failed = r.err
			return nil, failed
		}
		held = r.p
		return r.p, nil
	}, let
}
