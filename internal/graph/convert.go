package graph

import (
	"fmt"
	"time"

	"github.com/microsoft/kiota-abstractions-go/store"
	"github.com/microsoftgraph/msgraph-sdk-go/models"

	"github.com/profilesync/profilesync/internal/profile"
)

// convertUser flattens an SDK user into a profile.User. It reads the
// model's backing store, which holds exactly the properties Graph sent
// (keyed by their Graph names), so never-set properties stay absent.
// It also reports the manager id from a manager@delta annotation and
// whether the annotation was present at all.
func convertUser(u models.Userable) (pu profile.User, managerID string, managerKnown bool) {
	pu.Props = make(map[string]any, 16)
	if id := u.GetId(); id != nil {
		pu.ID = *id
	}
	for k, v := range u.GetBackingStore().Enumerate() {
		switch k {
		case "additionalData":
			ad, _ := v.(map[string]any)
			for ak, av := range ad {
				switch ak {
				case "@removed":
					pu.Removed = true
				case "manager@delta":
					managerKnown = true
					managerID = managerFromDelta(av)
				case "@odata.type":
				default:
					pu.Props[ak] = normalize(av)
				}
			}
		case "odataType", "backingStoreInitialized":
		default:
			pu.Props[k] = normalize(v)
		}
	}
	if pu.ID != "" {
		pu.Props["id"] = pu.ID
	}
	return pu, managerID, managerKnown
}

// managerFromDelta reads "manager@delta": [{"@odata.type":"#microsoft.graph.user","id":"…"}];
// an entry marked @removed (or an empty list) means the manager was removed.
func managerFromDelta(v any) string {
	list, _ := v.([]any)
	id := ""
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m == nil {
			continue
		}
		if _, removed := m["@removed"]; removed {
			continue
		}
		if s, ok := normalize(m["id"]).(string); ok {
			id = s
		}
	}
	return id
}

// normalize turns SDK values into the JSON-shaped values of profile.User.Props.
func normalize(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case *string:
		if x == nil {
			return nil
		}
		return *x
	case string, bool, float64:
		return x
	case *bool:
		if x == nil {
			return nil
		}
		return *x
	case *int32:
		if x == nil {
			return nil
		}
		return float64(*x)
	case *int64:
		if x == nil {
			return nil
		}
		return float64(*x)
	case *float32:
		if x == nil {
			return nil
		}
		return float64(*x)
	case *float64:
		if x == nil {
			return nil
		}
		return *x
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case *time.Time:
		if x == nil {
			return nil
		}
		return x.UTC().Format(time.RFC3339)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case store.BackedModel:
		out := map[string]any{}
		if x.GetBackingStore() == nil {
			return out
		}
		for k, e := range x.GetBackingStore().Enumerate() {
			switch k {
			case "additionalData":
				ad, _ := e.(map[string]any)
				for ak, av := range ad {
					if ak != "@odata.type" {
						out[ak] = normalize(av)
					}
				}
			case "odataType", "backingStoreInitialized":
			default:
				out[k] = normalize(e)
			}
		}
		return out
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}
