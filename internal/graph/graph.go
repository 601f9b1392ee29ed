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
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	abstractions "github.com/microsoft/kiota-abstractions-go"
	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphgocore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go-core/authentication"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/profilesync/profilesync/internal/profile"
)

// DefaultEndpoint is the Graph origin of the global Azure cloud.
const DefaultEndpoint = "https://graph.microsoft.com"

// DefaultParallelism is how many ranges a full sync reads at once unless
// told otherwise. Pages that carry $expand=manager hold at most 100 users
// (Microsoft's known issue "$expand on directory objects: Returns a maximum
// of 100 objects", docs/research/graph-upn-ranges.md), so a mapping that
// draws on the manager needs 16 readers to read 100,000 users in under 30
// seconds at 300 ms per page. Each reader has one request in flight; a page
// with $select and $expand costs Graph 2 resource units
// (learn.microsoft.com/graph/throttling-limits), about 110 per second at 16
// readers, far below a large tenant's 800.
const DefaultParallelism = 16

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
	// Parallelism is how many ranges of users a full sync reads at once
	// (GRAPH_PARALLELISM; default 16, see fullRead). 1 reads a full sync as
	// one users/delta round, as PnP does.
	Parallelism int
	// Prefetch is how many pages of a round are requested ahead of the one
	// being mapped and written (default 1; negative: none, each page is
	// requested when the one before it is done).
	Prefetch int
	Logger   *slog.Logger
}

// Client reads users from Graph.
type Client struct {
	origin      string // scheme://host[:port], the only one requests go to
	svc         *msgraphsdk.GraphServiceClient
	adapter     *msgraphsdk.GraphRequestAdapter
	log         *slog.Logger
	cacheMax    int
	timeout     time.Duration
	tempDir     string
	prefetch    int
	parallelism int
	pagesRead   atomic.Int64 // pages of users handed over, for progress reports
}

// PagesRead is how many pages of users the client has handed over since it
// was made (every kind of read): syncer.PageCounter, for progress.
func (c *Client) PagesRead() int64 { return c.pagesRead.Load() }

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
	if o.Parallelism <= 0 {
		o.Parallelism = DefaultParallelism
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
	httpClient := khttp.GetDefaultClient()
	httpClient.Transport = khttp.NewCustomTransportWithParentTransport(
		pinnedTransport{origin: origin, next: khttp.GetDefaultTransport()}, mws...)
	httpClient.Timeout = o.Timeout
	adapter, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(auth, nil, nil, httpClient)
	if err != nil {
		return nil, fmt.Errorf("graph request adapter: %w", err)
	}
	adapter.SetBaseUrl(origin + "/v1.0") // before NewGraphServiceClient, which copies it
	return &Client{
		origin:      origin,
		svc:         msgraphsdk.NewGraphServiceClient(adapter),
		adapter:     adapter,
		log:         o.Logger,
		cacheMax:    o.ManagerCache,
		timeout:     o.Timeout,
		tempDir:     o.TempDir,
		prefetch:    o.Prefetch,
		parallelism: o.Parallelism,
	}, nil
}

// Origin validates a Graph endpoint setting and returns its origin
// (profile.Origin: lower case, no default port).
func Origin(endpoint string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return "", fmt.Errorf("graph endpoint %q is not an absolute http(s) URL", endpoint)
	}
	if err := profile.CheckScheme(u); err != nil {
		return "", fmt.Errorf("graph endpoint: %w", err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("graph endpoint %q must be an origin such as https://graph.microsoft.com (no user, query or fragment)", u.Redacted())
	}
	if p := strings.TrimRight(u.Path, "/"); p != "" && p != "/v1.0" {
		return "", fmt.Errorf("graph endpoint %q must be an origin such as https://graph.microsoft.com (no path)", endpoint)
	}
	return profile.Origin(u), nil
}

// pin refuses, before any token is asked for or any byte sent, a URL that is
// not on the configured Graph origin: the nextLinks and deltaLinks of
// Graph's answers and the delta link read back from storage are followed
// only there. Graph's links are to be sent back to Graph itself
// (learn.microsoft.com/graph/paging: "You can retrieve the next page of
// results by sending the URL value of the @odata.nextLink property to
// Microsoft Graph"). kiota's authentication provider would leave the token
// off a host outside its valid hosts but still send the request, and it
// compares host names only: another port or scheme on the same host got
// the token.
func (c *Client) pin(rawURL string) error {
	if err := profile.PinOrigin("Graph link", rawURL, c.origin); err != nil {
		return fmt.Errorf("graph: %w", err)
	}
	return nil
}

// pinnedTransport sends only requests to the Graph origin: it sits below the
// SDK's middleware, so the redirect handler's second request (kiota-http-go
// follows 301/302/303/307/308 to any host, only dropping Authorization when
// the host changes: redirect_handler.go getRedirectRequest) is refused
// before it leaves if its Location points elsewhere.
type pinnedTransport struct {
	origin string
	next   http.RoundTripper
}

func (t pinnedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if got := profile.Origin(r.URL); got != t.origin {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("graph: refusing to send %s %s%s: its origin %s is not the configured origin %s: %w",
			r.Method, got, r.URL.EscapedPath(), got, t.origin, profile.ErrForeignOrigin)
	}
	return t.next.RoundTrip(r)
}

// managerRef marks a manager id still to be resolved into its properties.
type managerRef string

// classify turns SDK errors into the conditions the engine acts on. The
// Location of a 410 Gone (a fresh delta URL) is never followed: the engine
// starts a full sync from URLs this package builds.
func classify(err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		if strings.EqualFold(ge.Code, "syncStateNotFound") || strings.EqualFold(ge.Code, "resyncRequired") || ge.Status == 410 {
			return fmt.Errorf("graph delta (%d %s): %s: %w", ge.Status, ge.Code, ge.Message, profile.ErrDeltaExpired)
		}
		return ge
	}
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
