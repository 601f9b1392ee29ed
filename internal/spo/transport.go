package spo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

const (
	acceptJSON = "application/json;odata=nometadata"
	// maxJSON bounds any JSON answer read into memory (job lists included).
	maxJSON = 32 << 20
	// maxErrorBody bounds the part of an error answer that is read.
	maxErrorBody = 64 << 10
	// maxBackoff caps the exponential wait when no Retry-After is given.
	maxBackoff = time.Minute
	// maxRetryAfter caps a server-requested wait (PnP caps at 300 s too).
	maxRetryAfter = 5 * time.Minute
)

var errNotReplayable = errors.New("request body cannot be sent again")

// request describes one SharePoint call; do sends it, with retries.
type request struct {
	method      string
	path        string // escaped, relative to the site URL: "_api/web/…"
	header      http.Header
	contentType string
	accept      string
	body        []byte      // replayable body (nil: none, unless stream is set)
	stream      *streamBody // streamed body, rewindable only when seekable
	// idempotent allows retrying after a network failure, when it is not
	// known whether SharePoint acted on the request.
	idempotent bool
	noRetry    bool
}

// streamBody is a caller's reader sent as a request body of known size.
type streamBody struct {
	r      io.Reader
	size   int64
	seeker io.Seeker // non-nil when r can be rewound to start
	start  int64
}

func newStreamBody(r io.Reader, size int64) *streamBody {
	sb := &streamBody{r: r, size: size}
	if s, ok := r.(io.Seeker); ok {
		pos, err := s.Seek(0, io.SeekCurrent)
		if err == nil {
			sb.seeker, sb.start = s, pos
		}
	}
	return sb
}

func (rq *request) replayable() bool {
	return rq.stream == nil || rq.stream.seeker != nil
}

// newBody returns the body for one attempt and its length.
func (rq *request) newBody(attempt int) (io.Reader, int64, error) {
	switch {
	case rq.stream != nil:
		if attempt > 0 {
			if rq.stream.seeker == nil {
				return nil, 0, errNotReplayable
			}
			if _, err := rq.stream.seeker.Seek(rq.stream.start, io.SeekStart); err != nil {
				return nil, 0, fmt.Errorf("rewinding request body: %w", err)
			}
		}
		return &exactReader{r: rq.stream.r, n: rq.stream.size}, rq.stream.size, nil
	case rq.body != nil:
		return bytes.NewReader(rq.body), int64(len(rq.body)), nil
	}
	return nil, 0, nil
}

// exactReader yields exactly n bytes of r and remembers why r failed, so that
// a short or broken source is not mistaken for a network failure.
type exactReader struct {
	r   io.Reader
	n   int64
	err error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	n, err := e.r.Read(p)
	e.n -= int64(n)
	switch {
	case err == io.EOF && e.n > 0:
		err = io.ErrUnexpectedEOF
		e.err = err
	case err == io.EOF:
	case err != nil:
		e.err = err
	}
	return n, err
}

// do sends rq and returns a 2xx response, whose body the caller closes.
// Throttling answers (429/503/504) are retried up to maxRetries times after
// Retry-After or an exponential backoff; network failures are retried the
// same way for idempotent requests.
func (c *Client) do(ctx context.Context, rq *request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, rq, attempt)
		var delay time.Duration
		switch {
		case err != nil:
			if !IsRetryable(err) || !rq.idempotent {
				return nil, err
			}
			delay = backoff(attempt)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		default:
			rerr := readError(resp)
			if !rerr.Retryable() {
				return nil, rerr
			}
			err = rerr
			delay = c.retryAfter(resp.Header.Get("Retry-After"), attempt)
		}
		if rq.noRetry || attempt >= c.maxRetries || !rq.replayable() {
			return nil, err
		}
		c.log.DebugContext(ctx, "sharepoint retry", "method", rq.method, "attempt", attempt+1, "delay", delay, "err", err)
		if serr := c.sleep(ctx, delay); serr != nil {
			return nil, fmt.Errorf("waiting %s to retry after %v: %w", delay, err, serr)
		}
	}
}

// send makes one attempt.
func (c *Client) send(ctx context.Context, rq *request, attempt int) (*http.Response, error) {
	body, size, err := rq.newBody(attempt)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, c.origin+c.siteEsc+"/"+rq.path, body)
	if err != nil {
		return nil, fmt.Errorf("building sharepoint request: %w", err)
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range rq.header {
		req.Header[k] = v
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	req.Header.Set("Accept", rq.accept)
	req.Header.Set("User-Agent", c.userAgent)
	tok, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err != nil {
		return nil, fmt.Errorf("getting token for %s: %w", c.scope, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.log.DebugContext(ctx, "sharepoint request", "method", rq.method, "path", req.URL.Path,
			"attempt", attempt, "duration", time.Since(start), "err", err)
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("sharepoint %s %s: %w", rq.method, req.URL.Path, cerr)
		}
		if er, ok := body.(*exactReader); ok && er.err != nil {
			return nil, fmt.Errorf("reading request body: %w", er.err)
		}
		if re := (*redirectError)(nil); errors.As(err, &re) {
			return nil, fmt.Errorf("sharepoint %s %s: %w", rq.method, req.URL.Path, re.err)
		}
		return nil, &netError{fmt.Errorf("sharepoint %s %s: %w", rq.method, req.URL.Path, err)}
	}
	c.log.DebugContext(ctx, "sharepoint request", "method", rq.method, "path", req.URL.Path,
		"status", resp.StatusCode, "attempt", attempt, "duration", time.Since(start))
	return resp, nil
}

// readError consumes a non-2xx response.
func readError(resp *http.Response) *ResponseError {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return responseError(resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, b)
}

// retryAfter turns a Retry-After value (seconds or HTTP date) into a wait.
func (c *Client) retryAfter(v string, attempt int) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return backoff(attempt)
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		if s > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(c.now()), 0)
	} else {
		return backoff(attempt)
	}
	return min(d, maxRetryAfter)
}

// backoff is 1 s, 2 s, 4 s … capped at maxBackoff.
func backoff(attempt int) time.Duration {
	if attempt >= 6 {
		return maxBackoff
	}
	return min(time.Second<<attempt, maxBackoff)
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func trimBOM(b []byte) []byte { return bytes.TrimPrefix(b, bom) }

// decodeJSON reads a REST answer into v, accepting the nometadata shape and
// the verbose {"d":…} wrapper.
func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON))
	if err != nil {
		return fmt.Errorf("reading sharepoint response: %w", err)
	}
	b = trimBOM(b)
	var w struct {
		D json.RawMessage `json:"d"`
	}
	if json.Unmarshal(b, &w) == nil && len(w.D) > 0 {
		b = w.D
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding sharepoint response: %w", shortError(err))
	}
	return nil
}

// discard drains and closes a response whose body is not needed, so the
// connection can be reused.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}
