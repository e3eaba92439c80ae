package hpa_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/hpa"
)

// The HPA's answers over a sequence of syncs (15 s apart), from one replica.
func TestDesired(t *testing.T) {
	cases := []struct {
		name   string
		cfg    hpa.Config
		values []float64 // the metric at each sync
		want   []int     // the replicas after each sync
	}{
		{"up at once, as far as the value asks", hpa.Config{Min: 1, Max: 3, Target: 1},
			[]float64{1, 3, 3}, []int{1, 3, 3}},
		{"never above max", hpa.Config{Min: 1, Max: 3, Target: 1},
			[]float64{10}, []int{3}},
		{"target 2: one replica per two answers", hpa.Config{Min: 1, Max: 4, Target: 2},
			[]float64{3, 6, 8}, []int{2, 3, 4}},
		{"down only once the whole window (5 min = 20 syncs) asked for less", hpa.Config{Min: 1, Max: 3, Target: 1},
			append([]float64{3}, repeat[float64](0, 21)...),
			append(append([]int{3}, repeat(3, 19)...), 1, 1)},
		{"the window's highest recommendation: down to 2 first", hpa.Config{Min: 1, Max: 3, Target: 1},
			append(append([]float64{3}, repeat[float64](2, 10)...), repeat[float64](0, 20)...),
			append(append([]int{3}, repeat(3, 19)...), append(repeat(2, 10), 1)...)},
		{"never below min", hpa.Config{Min: 2, Max: 3, Target: 1, ScaleDownWindow: -1},
			[]float64{0, 0}, []int{2, 2}},
		{"within the tolerance (10 %) the count stays", hpa.Config{Min: 10, Max: 20, Target: 1, ScaleDownWindow: -1},
			[]float64{10, 10.5, 9.5, 12}, []int{10, 10, 10, 12}},
		{"up by at most max(2x, +4) per sync", hpa.Config{Min: 1, Max: 100, Target: 1},
			[]float64{50, 50, 50, 50}, []int{5, 10, 20, 40}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := hpa.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			current := tc.cfg.Min
			var got []int
			for i, v := range tc.values {
				current = h.Desired(time.Duration(i)*hpa.DefaultSyncPeriod, v, current)
				got = append(got, current)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("replicas %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewChecks(t *testing.T) {
	for _, tc := range []struct {
		cfg  hpa.Config
		want string
	}{
		{hpa.Config{Min: 0, Max: 3, Target: 1}, "want 1 <= min <= max"},
		{hpa.Config{Min: 3, Max: 2, Target: 1}, "want 1 <= min <= max"},
		{hpa.Config{Min: 1, Max: 3}, "target 0"},
		{hpa.Config{Min: 1, Max: 3, Target: 1, Tolerance: -1}, "negative"},
	} {
		_, err := hpa.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func repeat[T any](v T, times int) []T { return slices.Repeat([]T{v}, times) }
