package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// table collects per-run values by row and target and prints their
// medians, with what each proxy adds to the direct case.
type table struct {
	targets []target
	rows    []string
	values  map[string]map[string][]float64
}

func newTable(ts []target) *table {
	return &table{targets: ts, values: map[string]map[string][]float64{}}
}

func (t *table) add(row, target string, v float64) {
	if t.values[row] == nil {
		t.rows = append(t.rows, row)
		t.values[row] = map[string][]float64{}
	}
	t.values[row][target] = append(t.values[row][target], v)
}

// ratios are the comparisons printed after the added columns, each when
// both targets ran: the gate against nginx (the targets of issues 17 and
// 25), Go's own floor (goproxy) against nginx, and the gate against that
// floor (what the gate adds on top of any Go proxy).
var ratios = [][2]string{{"gate", "nginx"}, {"go-proxy", "nginx"}, {"gate", "go-proxy"}}

// throughputRow is a row where more is better: its ratio is of the values
// (a proxy's rate over the other's), not of what each adds to direct.
func throughputRow(row string) bool { return strings.HasSuffix(row, "req/s") }

func (t *table) print() { t.write(os.Stdout) }

// write prints a Markdown table: the median of each target, then each
// proxy's median minus direct's, then the ratios: of what each proxy adds
// (latency rows) or of the values (throughput rows); "–" where what one
// adds is not above 0.
func (t *table) write(out io.Writer) {
	if len(t.rows) == 0 {
		return
	}
	var pairs [][2]string
	for _, p := range ratios {
		if t.has(p[0]) && t.has(p[1]) {
			pairs = append(pairs, p)
		}
	}
	fmt.Fprintf(out, "\n| median over runs |")
	for _, tg := range t.targets {
		fmt.Fprintf(out, " %s |", tg.name)
	}
	for _, tg := range t.targets[1:] {
		fmt.Fprintf(out, " %s added |", tg.name)
	}
	for _, p := range pairs {
		fmt.Fprintf(out, " %s / %s |", p[0], p[1])
	}
	fmt.Fprintf(out, "\n|---|")
	for i := 0; i < 2*len(t.targets)-1+len(pairs); i++ {
		fmt.Fprintf(out, "---:|")
	}
	fmt.Fprintln(out)
	for _, row := range t.rows {
		med := func(name string) float64 { return median(t.values[row][name]) }
		direct := med("direct")
		fmt.Fprintf(out, "| %s |", row)
		for _, tg := range t.targets {
			fmt.Fprintf(out, " %.3f |", med(tg.name))
		}
		for _, tg := range t.targets[1:] {
			fmt.Fprintf(out, " %+.3f |", med(tg.name)-direct)
		}
		for _, p := range pairs {
			a, b := med(p[0])-direct, med(p[1])-direct
			if throughputRow(row) {
				a, b = med(p[0]), med(p[1])
			}
			if a > 0 && b > 0 {
				fmt.Fprintf(out, " %.2f |", a/b)
			} else {
				fmt.Fprintf(out, " – |")
			}
		}
		fmt.Fprintln(out)
	}
}

func (t *table) has(name string) bool {
	for _, tg := range t.targets {
		if tg.name == name {
			return true
		}
	}
	return false
}
