//go:build crashpoints

package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this build honours PROFILESYNC_CRASH_AT.
const Enabled = true

var (
	point string
	nth   int64 = 1
	hits  atomic.Int64
)

func init() {
	v := os.Getenv(Setting)
	name, n, ok := strings.Cut(v, "#")
	point = name
	if ok {
		if k, err := strconv.ParseInt(n, 10, 64); err == nil && k > 0 {
			nth = k
		}
	}
}

// Hit kills the process with SIGKILL when name is the configured point and
// this is its n-th hit: no deferred function, no buffered write, no lease
// release runs, as when a Flex instance is recycled.
func Hit(name string) {
	if name != point || hits.Add(1) != nth {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint: killing the process at %s#%d\n", name, nth)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never returns
}
