package graph

import (
	"slices"
	"strings"
)

// UPNRange is one part of the userPrincipalName space, read with its own
// $filter by the parallel reads of a full sync (issue 12; not wired yet).
// Lo and Hi are bounds that contain no '@', so no UPN (which always does)
// equals one: "le Hi" and "ge Hi" never select the same user. "" is an
// open end.
type UPNRange struct {
	Lo, Hi string
}

// Filter is the range's $filter ("" for the whole space). Graph documents
// ge and le for userPrincipalName, not lt or gt
// (microsoft-graph-docs-contrib api-reference/v1.0/resources/user.md).
func (r UPNRange) Filter() string {
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	switch {
	case r.Lo == "" && r.Hi == "":
		return ""
	case r.Lo == "":
		return "userPrincipalName le " + lit(r.Hi)
	case r.Hi == "":
		return "userPrincipalName ge " + lit(r.Lo)
	}
	return "userPrincipalName ge " + lit(r.Lo) + " and userPrincipalName le " + lit(r.Hi)
}

// SplitUPNs cuts the UPN space into at most n ranges holding about as many
// of the sampled UPNs each. The ranges are chained, (-∞, b1], [b1, b2], …,
// [bk, ∞), with '@'-free bounds, which makes them complete whatever order
// the server compares strings in (Graph documents no collation,
// docs/research/graph-upn-ranges.md): for a UPN u above b1 and below bk,
// the first bound above u has a bound below u just before it, and the range
// between those two holds u. Under the server's own order the ranges are
// also disjoint; where its order differs from the one used here, a range
// may come out empty or two may overlap, which costs balance, never a user
// (the import file keeps one row per user).
//
// The bounds come from the sample sorted case-insensitively: each is the
// lower-cased part before '@' of the UPN at a quantile.
func SplitUPNs(sample []string, n int) []UPNRange {
	if n <= 1 || len(sample) < 2 {
		return []UPNRange{{}}
	}
	keys := make([]string, 0, len(sample))
	for _, u := range sample {
		keys = append(keys, strings.ToLower(u))
	}
	slices.Sort(keys)
	var bounds []string
	for i := 1; i < n; i++ {
		k := keys[i*len(keys)/n]
		b, _, _ := strings.Cut(k, "@")
		if b == "" || (len(bounds) > 0 && b <= bounds[len(bounds)-1]) {
			continue // no bound of its own: this range joins the next
		}
		bounds = append(bounds, b)
	}
	if len(bounds) == 0 {
		return []UPNRange{{}}
	}
	out := []UPNRange{{Hi: bounds[0]}}
	for i := 0; i+1 < len(bounds); i++ {
		out = append(out, UPNRange{Lo: bounds[i], Hi: bounds[i+1]})
	}
	return append(out, UPNRange{Lo: bounds[len(bounds)-1]})
}
