package main

import "fmt"

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

// print writes a Markdown table: the median of each target, then each
// proxy's median minus direct's, then gate's added over nginx's.
func (t *table) print() {
	if len(t.rows) == 0 {
		return
	}
	fmt.Printf("\n| median over runs |")
	for _, tg := range t.targets {
		fmt.Printf(" %s |", tg.name)
	}
	for _, tg := range t.targets[1:] {
		fmt.Printf(" %s added |", tg.name)
	}
	gateAndNginx := t.has("gate") && t.has("nginx")
	if gateAndNginx {
		fmt.Printf(" gate added / nginx added |")
	}
	columns := 2*len(t.targets) - 1
	if gateAndNginx {
		columns++
	}
	fmt.Printf("\n|---|")
	for i := 0; i < columns; i++ {
		fmt.Printf("---:|")
	}
	fmt.Println()
	for _, row := range t.rows {
		direct := median(t.values[row]["direct"])
		fmt.Printf("| %s |", row)
		for _, tg := range t.targets {
			fmt.Printf(" %.3f |", median(t.values[row][tg.name]))
		}
		for _, tg := range t.targets[1:] {
			fmt.Printf(" %+.3f |", median(t.values[row][tg.name])-direct)
		}
		if gateAndNginx {
			g, n := median(t.values[row]["gate"])-direct, median(t.values[row]["nginx"])-direct
			if g > 0 && n > 0 {
				fmt.Printf(" %.2f |", g/n)
			} else {
				fmt.Printf(" – |")
			}
		}
		fmt.Println()
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
