// Package graph reads Entra ID users from Microsoft Graph with msgraph-sdk-go.
//
// It is the only package of profilesync that imports the Graph SDK: the SDK
// is very large (minutes and gigabytes to compile), so everything else talks
// to Graph through this package's small surface and the nouns of package
// profile.
package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	abstractions "github.com/microsoft/kiota-abstractions-go"
	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphgocore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go-core/authentication"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/crashpoint"
	"github.com/profilesync/profilesync/internal/profile"
)

// DefaultEndpoint is the Graph origin of the global Azure cloud.
const DefaultEndpoint = "https://graph.microsoft.com"

// Options configure a Client.
type Options struct {
	// Endpoint is the Graph origin (scheme and host, no path), e.g.
	// https://graph.microsoft.com or a national cloud's. The token audience
	// is this origin.
	Endpoint   string
	Credential azcore.TokenCredential
	// MaxRetries bounds the SDK's retries of 429/503/504 answers (each waits
	// Retry-After). Default 8.
	MaxRetries int
	// ManagerCache bounds how many managers are remembered during a round
	// (memory stays bounded however many users there are: each entry holds
	// only the manager properties the mapping needs, a few hundred bytes).
	// Default 20,000; a miss costs one item of a $batch of 20.
	ManagerCache int
	// TempDir holds the spill files of initial rounds that join users with
	// their managers ("" = os.TempDir()).
	TempDir string
	// Timeout bounds one Graph call, its retries after 429/503/504 included.
	// Default 5 minutes.
	Timeout time.Duration
	// Prefetch is how many pages of a round are requested ahead of the one
	// being mapped and written (default 1; negative: none, each page is
	// requested when the one before it is done).
	Prefetch int
	Logger   *slog.Logger
}

// Client reads users from Graph.
type Client struct {
	svc      *msgraphsdk.GraphServiceClient
	adapter  *msgraphsdk.GraphRequestAdapter
	log      *slog.Logger
	cacheMax int
	timeout  time.Duration
	tempDir  string
	prefetch int
}

// bounded gives one Graph exchange its own deadline. kiota-http-go puts a
// timeout on a context without a deadline and never cancels it, which keeps
// a timer per request alive for the whole timeout; with a deadline of our
// own, cancelled as soon as the answer is read, nothing lingers.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// New builds a Graph client for the given origin and credential.
func New(o Options) (*Client, error) {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	origin, err := Origin(o.Endpoint)
	if err != nil {
		return nil, err
	}
	if o.Credential == nil {
		return nil, errors.New("graph: a credential is required")
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 8
	}
	if o.ManagerCache <= 0 {
		o.ManagerCache = 20000
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Prefetch == 0 {
		o.Prefetch = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	u, _ := url.Parse(origin)
	auth, err := authentication.NewAzureIdentityAuthenticationProviderWithScopesAndValidHosts(
		o.Credential, []string{origin + "/.default"}, []string{u.Hostname()})
	if err != nil {
		return nil, fmt.Errorf("graph authentication provider: %w", err)
	}
	opts := msgraphgocore.GraphClientOptions{GraphServiceVersion: "v1.0", GraphServiceLibraryVersion: "1.89.0"}
	mws := msgraphgocore.GetDefaultMiddlewaresWithOptions(&opts)
	for i, mw := range mws {
		if _, ok := mw.(*khttp.RetryHandler); ok {
			mws[i] = khttp.NewRetryHandlerWithOptions(khttp.RetryHandlerOptions{
				MaxRetries:   o.MaxRetries,
				DelaySeconds: 3,
				ShouldRetry: func(time.Duration, int, *http.Request, *http.Response) bool {
					return true
				},
			})
		}
	}
	httpClient := khttp.GetDefaultClient(mws...)
	httpClient.Timeout = o.Timeout
	adapter, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(auth, nil, nil, httpClient)
	if err != nil {
		return nil, fmt.Errorf("graph request adapter: %w", err)
	}
	adapter.SetBaseUrl(origin + "/v1.0") // before NewGraphServiceClient, which copies it
	return &Client{
		svc:      msgraphsdk.NewGraphServiceClient(adapter),
		adapter:  adapter,
		log:      o.Logger,
		cacheMax: o.ManagerCache,
		timeout:  o.Timeout,
		tempDir:  o.TempDir,
		prefetch: o.Prefetch,
	}, nil
}

// Origin validates a Graph endpoint setting and returns its origin.
func Origin(endpoint string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("graph endpoint %q is not an absolute http(s) URL", endpoint)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return "", fmt.Errorf("graph endpoint %q must use https (http is only allowed on loopback)", endpoint)
	}
	if p := strings.TrimRight(u.Path, "/"); p != "" && p != "/v1.0" {
		return "", fmt.Errorf("graph endpoint %q must be an origin such as https://graph.microsoft.com (no path)", endpoint)
	}
	return u.Scheme + "://" + u.Host, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Delta runs one round of GET /users/delta, page by page, calling fn for
// every user. deltaLink "" starts an initial (full) round; otherwise the
// saved link is followed. It returns the round's new delta link. A link
// Graph no longer honours yields an error wrapping profile.ErrDeltaExpired.
func (c *Client) Delta(ctx context.Context, sel profile.Selection, deltaLink string, fn func(profile.User) error) (string, error) {
	initial := deltaLink == ""
	builder := c.svc.Users().Delta()
	var resp users.DeltaGetResponseable
	var err error
	// An initial round that needs managers joins users with managers on disk
	// (see joiner); other rounds look managers up, 20 at a time, with a cache.
	var join *joiner
	if initial && len(sel.Manager) > 0 {
		if join, err = newJoiner(c.tempDir, sel.Manager); err != nil {
			return "", err
		}
		defer join.close()
	}
	first := func(ctx context.Context) (users.DeltaGetResponseable, error) {
		rctx, cancel := c.bounded(ctx)
		defer cancel()
		if !initial {
			return builder.WithUrl(deltaLink).GetAsDeltaGetResponse(rctx, nil)
		}
		props := append([]string(nil), sel.Properties...)
		if len(sel.Manager) > 0 {
			for _, m := range sel.Manager { // every user may be a manager
				if !slices.Contains(props, m) {
					props = append(props, m)
				}
			}
			props = append(props, "manager")
		}
		return builder.GetAsDeltaGetResponse(rctx, &users.DeltaRequestBuilderGetRequestConfiguration{
			QueryParameters: &users.DeltaRequestBuilderGetQueryParameters{Select: props},
		})
	}
	next := func(ctx context.Context, link string) (users.DeltaGetResponseable, error) {
		rctx, cancel := c.bounded(ctx)
		defer cancel()
		return builder.WithUrl(link).GetAsDeltaGetResponse(rctx, nil)
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	nextPage := c.pages(pctx, first, next)
	resp, err = nextPage()
	mgr := newManagerResolver(c, sel.Manager)
	// Graph may send a user more than once in a round; each sighting gets
	// the next sequence number, so the engine keeps the newest (see
	// profile.User.Seq). A later sighting may leave out manager@delta (Graph
	// sends it only when the manager changed, microsoft-graph-explorer-v4
	// #4018): the manager an earlier sighting of this round reported still
	// holds, so it is remembered for users whose manager changed (a handful
	// per incremental round).
	var seq uint64
	changedManager := map[string]string{}
	pages, count := 0, 0
	start := time.Now()
	for {
		if err != nil {
			return "", classify(err)
		}
		pages++
		batch := make([]profile.User, 0, len(resp.GetValue()))
		for _, u := range resp.GetValue() {
			pu, managerID, managerKnown := convertUser(u)
			seq++
			pu.Seq = seq
			if !initial && len(sel.Manager) > 0 && !pu.Removed {
				if managerKnown {
					changedManager[pu.ID] = managerID
				} else if id, ok := changedManager[pu.ID]; ok {
					managerID, managerKnown = id, true
				}
			}
			if join != nil && !pu.Removed {
				if err := join.candidate(pu); err != nil {
					return "", fmt.Errorf("spilling users: %w", err)
				}
				if managerID != "" {
					if err := join.wait(pu, managerID); err != nil {
						return "", fmt.Errorf("spilling users: %w", err)
					}
					continue
				}
				pu.Props["manager"] = nil
				batch = append(batch, pu)
				continue
			}
			if len(sel.Manager) > 0 && !pu.Removed {
				switch {
				case managerID != "":
					pu.Props["manager"] = managerRef(managerID)
				case managerKnown || initial:
					pu.Props["manager"] = nil
				}
			}
			batch = append(batch, pu)
		}
		if len(sel.Manager) > 0 && join == nil {
			if err := mgr.resolve(ctx, batch); err != nil {
				return "", err
			}
		}
		for _, u := range batch {
			if err := fn(u); err != nil {
				return "", err
			}
		}
		crashpoint.Hit(crashpoint.GraphPage)
		count += len(resp.GetValue())
		if pages%10 == 0 {
			c.log.Info("reading users from Graph", "pages", pages, "users", count, "elapsed", time.Since(start).Round(time.Millisecond).String())
		}
		if link := resp.GetOdataNextLink(); link != nil && *link != "" {
			resp, err = nextPage()
			continue
		}
		dl := resp.GetOdataDeltaLink()
		if dl == nil || *dl == "" {
			return "", errors.New("graph delta round ended without @odata.deltaLink")
		}
		if join != nil {
			if err := join.finish(ctx, mgr, fn); err != nil {
				return "", err
			}
		}
		c.log.Info("Graph delta round done", "initial", initial, "pages", pages, "users", count, "elapsed", time.Since(start).Round(time.Millisecond).String())
		return *dl, nil
	}
}

// pages returns a function that hands over the pages of a round in order:
// the first page, then one per @odata.nextLink. With Prefetch > 0 a
// goroutine requests the next page while the caller maps and writes the
// current one, so a round's wall time approaches Graph's own (a page is
// requested only once the one before it has arrived: nextLinks are
// sequential), holding at most Prefetch pages besides the current. After
// an error it returns that error again.
func (c *Client) pages(ctx context.Context, first func(context.Context) (users.DeltaGetResponseable, error),
	next func(context.Context, string) (users.DeltaGetResponseable, error)) func() (users.DeltaGetResponseable, error) {
	nextLink := func(r users.DeltaGetResponseable) string {
		if l := r.GetOdataNextLink(); l != nil {
			return *l
		}
		return ""
	}
	if c.prefetch <= 0 {
		var last users.DeltaGetResponseable
		return func() (users.DeltaGetResponseable, error) {
			var err error
			if last == nil {
				last, err = first(ctx)
			} else {
				last, err = next(ctx, nextLink(last))
			}
			return last, err
		}
	}
	type page struct {
		resp users.DeltaGetResponseable
		err  error
	}
	ch := make(chan page, c.prefetch-1)
	go func() {
		defer close(ch)
		resp, err := first(ctx)
		for {
			select {
			case ch <- page{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			link := nextLink(resp)
			if link == "" {
				return
			}
			resp, err = next(ctx, link)
		}
	}()
	var failed error
	return func() (users.DeltaGetResponseable, error) {
		if failed != nil {
			return nil, failed
		}
		p, ok := <-ch
		if !ok {
			failed = ctx.Err()
			if failed == nil {
				failed = errors.New("graph: no more pages")
			}
			return nil, failed
		}
		if p.err != nil {
			failed = p.err
		}
		return p.resp, p.err
	}
}

// managerRef marks a manager id still to be resolved into its properties.
type managerRef string

// classify turns SDK errors into the conditions the engine acts on.
func classify(err error) error {
	var oe *odataerrors.ODataError
	if errors.As(err, &oe) {
		code := ""
		msg := oe.Error()
		if e := oe.GetErrorEscaped(); e != nil {
			if e.GetCode() != nil {
				code = *e.GetCode()
			}
			if e.GetMessage() != nil {
				msg = *e.GetMessage()
			}
		}
		if strings.EqualFold(code, "syncStateNotFound") || strings.EqualFold(code, "resyncRequired") || oe.ResponseStatusCode == 410 {
			return fmt.Errorf("graph delta (%d %s): %s: %w", oe.ResponseStatusCode, code, msg, profile.ErrDeltaExpired)
		}
		return &Error{Status: oe.ResponseStatusCode, Code: code, Message: msg}
	}
	var ae *abstractions.ApiError
	if errors.As(err, &ae) {
		if ae.ResponseStatusCode == 410 {
			return fmt.Errorf("graph delta (410 Gone): %w", profile.ErrDeltaExpired)
		}
		return &Error{Status: ae.ResponseStatusCode, Message: ae.Error()}
	}
	return fmt.Errorf("graph: %w", err)
}

// Error is a Graph error answer.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("graph: %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("graph: %d: %s", e.Status, e.Message)
}

// Ping checks that a token can be had and Graph answers: GET /users?$top=1&$select=id.
func (c *Client) Ping(ctx context.Context) error {
	top := int32(1)
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	_, err := c.svc.Users().Get(ctx, &users.UsersRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UsersRequestBuilderGetQueryParameters{Top: &top, Select: []string{"id"}},
	})
	if err != nil {
		return classify(err)
	}
	return nil
}
