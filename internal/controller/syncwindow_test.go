package controller

import (
	"strings"
	"testing"
	"time"

	"converge.dev/converge/api/v1alpha1"
)

func TestSyncWindowVerdict(t *testing.T) {
	no := false
	business := v1alpha1.SyncWindow{Kind: "allow", Days: []string{"Mon", "Tue", "Wed", "Thu", "Fri"}, Start: "09:00", End: "17:00", TimeZone: "Europe/Berlin"}
	freeze := v1alpha1.SyncWindow{Kind: "deny", Start: "22:00", End: "06:00"}
	strict := v1alpha1.SyncWindow{Kind: "deny", Start: "00:00", End: "23:59", ManualSync: &no}
	// 2026-11-26 is a Thursday; Berlin is UTC+1 in November.
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	for name, tc := range map[string]struct {
		windows []v1alpha1.SyncWindow
		now     time.Time
		manual  bool
		want    bool
		why     string
	}{
		"no windows":                           {nil, at("2026-11-26T03:00:00Z"), false, true, ""},
		"inside business hours (Berlin)":       {[]v1alpha1.SyncWindow{business}, at("2026-11-26T08:30:00Z"), false, true, ""},
		"before business hours (Berlin)":       {[]v1alpha1.SyncWindow{business}, at("2026-11-26T07:30:00Z"), false, false, "no allow sync window is open"},
		"on a Saturday":                        {[]v1alpha1.SyncWindow{business}, at("2026-11-28T10:00:00Z"), false, false, "no allow"},
		"manual outside business hours":        {[]v1alpha1.SyncWindow{business}, at("2026-11-28T10:00:00Z"), true, true, ""},
		"overnight freeze, late":               {[]v1alpha1.SyncWindow{freeze}, at("2026-11-26T23:00:00Z"), false, false, "a deny sync window is open"},
		"overnight freeze, early next day":     {[]v1alpha1.SyncWindow{freeze}, at("2026-11-27T05:59:00Z"), false, false, "deny"},
		"overnight freeze, over":               {[]v1alpha1.SyncWindow{freeze}, at("2026-11-27T06:00:00Z"), false, true, ""},
		"deny wins over allow":                 {[]v1alpha1.SyncWindow{{Kind: "allow", Start: "00:00", End: "23:59"}, freeze}, at("2026-11-26T23:00:00Z"), false, false, "deny"},
		"manual passes a freeze":               {[]v1alpha1.SyncWindow{freeze}, at("2026-11-26T23:00:00Z"), true, true, ""},
		"manual stopped where the window says": {[]v1alpha1.SyncWindow{strict}, at("2026-11-26T12:00:00Z"), true, false, "deny"},
	} {
		t.Run(name, func(t *testing.T) {
			got, why, err := syncWindowVerdict(tc.windows, tc.now, tc.manual)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("got %v %q, want %v %q", got, why, tc.want, tc.why)
			}
		})
	}
	if _, _, err := syncWindowVerdict([]v1alpha1.SyncWindow{{Kind: "allow", Start: "09:00", End: "17:00", TimeZone: "Mars/Olympus"}}, time.Now(), false); err == nil {
		t.Error("an unknown time zone was accepted")
	}
}
