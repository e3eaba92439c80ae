package examples_test

import (
	"strings"
	"testing"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

// TestGrafanaDashboardsNameEveryGateStateAndOutcome checks that the panels
// that list the gate's backend states and request outcomes one by one list
// every state and outcome the gate has: a state missing from the Backend
// state timeline shows as "unknown", an outcome missing from the Requests by
// outcome description is one an operator cannot look up.
func TestGrafanaDashboardsNameEveryGateStateAndOutcome(t *testing.T) {
	var states, outcomes []string
	for _, s := range gate.States {
		states = append(states, string(s))
	}
	for _, o := range gate.Outcomes {
		outcomes = append(outcomes, string(o))
	}
	for file, dash := range grafanaDashboards(t) {
		panels := map[string]any{}
		for _, p := range list(dash, "panels") {
			panels[str(p, "title")] = p
		}
		for _, c := range []struct {
			panel string
			where string // what of the panel must name each
			text  func(p any) string
			names []string
		}{
			{"Backend state", "description", func(p any) string { return str(p, "description") }, states},
			{"Backend state", "value mappings", mappingTexts, states},
			// unknown is no series of its own: it is what the timeline shows
			// when no state="..." of the query is 1.
			{"Backend state", "query", exprs, without(states, string(gate.StateUnknown))},
			{"Requests by outcome", "description", func(p any) string { return str(p, "description") }, outcomes},
		} {
			p, ok := panels[c.panel]
			if !ok {
				t.Errorf("%s: no panel %q", file, c.panel)
				continue
			}
			text := c.text(p)
			for _, name := range c.names {
				want := name
				if c.where == "query" {
					want = `state="` + name + `"`
				}
				if !strings.Contains(text, want) {
					t.Errorf("%s: panel %q: its %s do not name %s", file, c.panel, c.where, want)
				}
			}
		}
	}
}

// mappingTexts joins the texts of a panel's value mappings, one a line.
func mappingTexts(p any) string {
	var texts []string
	for _, m := range list(p, "fieldConfig", "defaults", "mappings") {
		if options, ok := at(m, "options").(map[string]any); ok {
			for _, o := range options {
				texts = append(texts, str(o, "text"))
			}
		}
	}
	return strings.Join(texts, "\n")
}

// exprs joins a panel's queries, one a line.
func exprs(p any) string {
	var out []string
	for _, target := range list(p, "targets") {
		out = append(out, str(target, "expr"))
	}
	return strings.Join(out, "\n")
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}
