//go:build !crashpoints

package crashpoint

// Enabled reports whether this build honours PROFILESYNC_CRASH_AT.
const Enabled = false

// Hit does nothing in the product.
func Hit(string) {}
