package controller

import (
	"fmt"
	"strings"
	"time"

	// Time zones are resolved from data built into the binary: the agent's
	// image carries no zoneinfo.
	_ "time/tzdata"

	"converge.dev/converge/api/v1alpha1"
)

// syncWindowVerdict says whether a sync may run at now under windows,
// and why not. manual is a sync someone asked for.
func syncWindowVerdict(windows []v1alpha1.SyncWindow, now time.Time, manual bool) (bool, string, error) {
	var allows, openAllow bool
	for _, w := range windows {
		open, err := windowOpen(w, now)
		if err != nil {
			return false, "", err
		}
		manualOK := w.ManualSync == nil || *w.ManualSync
		switch w.Kind {
		case "deny":
			if open && !(manual && manualOK) {
				return false, fmt.Sprintf("a deny sync window is open (%s)", describeWindow(w)), nil
			}
		case "allow":
			allows = true
			openAllow = openAllow || open || (manual && manualOK)
		default:
			return false, "", fmt.Errorf("sync window kind %q: want allow or deny", w.Kind)
		}
	}
	if allows && !openAllow {
		return false, "no allow sync window is open", nil
	}
	return true, "", nil
}

func describeWindow(w v1alpha1.SyncWindow) string {
	days := "every day"
	if len(w.Days) > 0 {
		days = strings.Join(w.Days, ",")
	}
	tz := w.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return fmt.Sprintf("%s %s-%s %s", days, w.Start, w.End, tz)
}

// windowOpen reports whether w is open at now.
func windowOpen(w v1alpha1.SyncWindow, now time.Time) (bool, error) {
	loc := time.UTC
	if w.TimeZone != "" {
		var err error
		if loc, err = time.LoadLocation(w.TimeZone); err != nil {
			return false, fmt.Errorf("sync window time zone %q: %w", w.TimeZone, err)
		}
	}
	start, err := clock(w.Start)
	if err != nil {
		return false, err
	}
	end, err := clock(w.End)
	if err != nil {
		return false, err
	}
	t := now.In(loc)
	minute := t.Hour()*60 + t.Minute()
	today, yesterday := t.Weekday(), (t.Weekday()+6)%7
	if start <= end {
		return minute >= start && minute < end && onDay(w.Days, today), nil
	}
	// Overnight: open from start today, or until end from yesterday's start.
	return (minute >= start && onDay(w.Days, today)) || (minute < end && onDay(w.Days, yesterday)), nil
}

func clock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("sync window time %q: want HH:MM", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

func onDay(days []string, d time.Weekday) bool {
	if len(days) == 0 {
		return true
	}
	for _, s := range days {
		if strings.EqualFold(s, d.String()[:3]) || strings.EqualFold(s, d.String()) {
			return true
		}
	}
	return false
}
