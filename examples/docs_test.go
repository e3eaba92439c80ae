package examples_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocsShowCheckedManifests: every YAML block in the README and in docs/
// comes from a file under examples/ (which the other tests check). The
// block's first line names the file ("# examples/scaling/pdb.yaml"); the
// other lines must appear in that file as they are, one after the other.
func TestDocsShowCheckedManifests(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, "../README.md")
	blocks := 0
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range yamlBlocks(string(raw)) {
			blocks++
			first, body, _ := strings.Cut(b.text, "\n")
			source := strings.TrimPrefix(first, "# ")
			if !strings.HasPrefix(first, "# examples/") || strings.ContainsAny(source, " \t") {
				t.Errorf("%s:%d: a YAML block must start with \"# examples/<file>\", the checked file it shows; got %q", page, b.line, first)
				continue
			}
			file, err := os.ReadFile(filepath.Join("..", source))
			if err != nil {
				t.Errorf("%s:%d: %v", page, b.line, err)
				continue
			}
			if !containsLines(string(file), body) {
				t.Errorf("%s:%d: the block is not a part of %s as it stands; copy it again:\n%s", page, b.line, source, body)
			}
		}
	}
	if blocks == 0 {
		t.Error("no YAML blocks found: the test checks nothing")
	}
}

type block struct {
	line int
	text string
}

var fence = regexp.MustCompile("(?m)^( *)```yaml\n((?s).*?)^ *```$")

// yamlBlocks returns the ```yaml blocks of a Markdown page, unindented.
func yamlBlocks(page string) []block {
	var out []block
	for _, m := range fence.FindAllStringSubmatchIndex(page, -1) {
		indent := page[m[2]:m[3]]
		var lines []string
		for _, l := range strings.Split(strings.TrimSuffix(page[m[4]:m[5]], "\n"), "\n") {
			lines = append(lines, strings.TrimPrefix(l, indent))
		}
		out = append(out, block{line: strings.Count(page[:m[0]], "\n") + 1, text: strings.Join(lines, "\n")})
	}
	return out
}

// containsLines reports whether the lines of part occur in file, in a row.
func containsLines(file, part string) bool {
	return strings.Contains("\n"+file+"\n", "\n"+part+"\n")
}

// TestREADMEIsShortAndInOrder keeps the README a user's path, in the order
// issue 26 set, at most 300 lines: troubleshooting and the reference tables
// belong in docs/.
func TestREADMEIsShortAndInOrder(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 300 {
		t.Errorf("README.md has %d lines, want 300 at most: move the depth to docs/", len(lines))
	}
	want := []string{"Quick start", "Which token", "Deploy", "Choosing a KEDA trigger", "Idle tabs",
		"The wake gate", "Configuration", "Links"}
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "## ") {
			got = append(got, strings.TrimPrefix(l, "## "))
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("README.md sections %q, want %q", got, want)
	}
}

// TestReferenceFlagTable: the flag table of docs/reference.md is
// --help-long's, so the two cannot drift: every flag and nothing else, each
// with the env var kingpin reads for it and its default. Only the meaning
// column is free text. Two env vars are read outside kingpin (main.go):
// TOKEN, the token itself, and PORT, the old scaler's.
func TestReferenceFlagTable(t *testing.T) {
	raw, err := os.ReadFile("../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(raw)
	start := strings.Index(section, "\n## Flags\n")
	if start < 0 {
		t.Fatal("no section \"## Flags\" in docs/reference.md")
	}
	section = section[start+1:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	readOutsideKingpin := map[string]string{"TOKEN": "openwebui.token-file", "PORT": "web.listen-address"}
	ticked := regexp.MustCompile("`([^`]*)`")
	envName := regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`)
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			t.Errorf("docs/reference.md: row %q, want | flag | env | default | meaning |", line)
			continue
		}
		var flags, envs, defaults []string
		for _, m := range ticked.FindAllStringSubmatch(cells[1], -1) {
			flags = append(flags, strings.TrimPrefix(m[1], "--"))
		}
		for _, m := range ticked.FindAllStringSubmatch(cells[2], -1) {
			if envName.MatchString(m[1]) {
				envs = append(envs, m[1])
			}
		}
		for _, m := range ticked.FindAllStringSubmatch(cells[3], -1) {
			defaults = append(defaults, m[1])
		}
		var wantEnvs, wantDefaults []string
		for _, name := range flags {
			documented[name] = true
			h, ok := facts.flagHelp[name]
			if !ok {
				t.Errorf("docs/reference.md lists --%s, which the exporter does not have", name)
				continue
			}
			if h.env != "" {
				wantEnvs = append(wantEnvs, h.env)
			}
			for env, flag := range readOutsideKingpin {
				if flag == name {
					wantEnvs = append(wantEnvs, env)
				}
			}
			if h.def != "" {
				wantDefaults = append(wantDefaults, h.def)
			}
		}
		slices.Sort(envs)
		slices.Sort(wantEnvs)
		if !slices.Equal(envs, wantEnvs) {
			t.Errorf("docs/reference.md: %v: env %q, but --help-long (and main.go) say %q", flags, envs, wantEnvs)
		}
		if !slices.Equal(defaults, wantDefaults) {
			t.Errorf("docs/reference.md: %v: default %q, but --help-long says %q", flags, defaults, wantDefaults)
		}
	}
	for name := range facts.flagHelp {
		if name == "help" || name == "help-long" || name == "help-man" || name == "version" {
			continue
		}
		if !documented[name] {
			t.Errorf("flag --%s is not in the flag table of docs/reference.md", name)
		}
	}
	if len(documented) < 20 {
		t.Errorf("only %d flags found in docs/reference.md: the test checks too little", len(documented))
	}
}

var (
	mdLinkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdFenceRE   = regexp.MustCompile("(?ms)^ *```.*?^ *```")
	mdCodeRE    = regexp.MustCompile("`[^`\n]*`")
	mdHeadingRE = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)
	slugDropRE  = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// anchors returns the anchors GitHub gives a page's headings: lower case,
// punctuation dropped, spaces made hyphens, repeats numbered.
func anchors(page string) map[string]bool {
	out := map[string]bool{}
	for _, m := range mdHeadingRE.FindAllStringSubmatch(mdFenceRE.ReplaceAllString(page, ""), -1) {
		slug := strings.ReplaceAll(slugDropRE.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		a := slug
		for i := 1; out[a]; i++ {
			a = fmt.Sprintf("%s-%d", slug, i)
		}
		out[a] = true
	}
	return out
}

// TestDocsLinksResolve: every relative link of the README and the docs
// reaches a file of the repository, and its #anchor a heading there; moving
// a section (issue 26 moved several out of the README) cannot leave a link
// behind.
func TestDocsLinksResolve(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, "../README.md", "../CONTRIBUTING.md", "../CHANGELOG.md", "../BENCHMARKS.md",
		"../SECURITY.md", "../charts/openwebui-exporter/README.md")
	links := 0
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		text := mdCodeRE.ReplaceAllString(mdFenceRE.ReplaceAllString(string(raw), ""), "``")
		for _, m := range mdLinkRE.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				if info, statErr := os.Stat(path); statErr == nil && info.IsDir() && anchor == "" {
					continue
				}
				t.Errorf("%s: link %s: %v", page, target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(path, ".md") && !anchors(string(body))[anchor] {
				t.Errorf("%s: link %s: no heading with the anchor #%s in %s", page, target, anchor, path)
			}
		}
	}
	if links < 50 {
		t.Errorf("only %d relative links found: the test checks too little", links)
	}
}

// TestReferenceMetricTable: every metric the exporter serves (with the gate,
// in admin mode) has a row in the metric table of docs/reference.md, and
// every row names a metric of the exporter's; a new metric without a row
// fails. openwebui_engaged_users and openwebui_skipped_rows_total need
// --activity.idle-timeout, which the learnt exporter does not run with.
func TestReferenceMetricTable(t *testing.T) {
	raw, err := os.ReadFile("../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	idleTabsOnly := map[string]bool{"openwebui_engaged_users": true, "openwebui_skipped_rows_total": true}
	name := regexp.MustCompile("`(openwebui_[a-z_]+)")
	documented := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `openwebui_") {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(strings.SplitN(line, "|", 3)[1], -1) {
			documented[m[1]] = true
			if !facts.metrics[m[1]] && !idleTabsOnly[m[1]] && !servedInSomeSetups(m[1]) {
				t.Errorf("docs/reference.md documents %s, which the exporter does not serve", m[1])
			}
		}
	}
	for m := range facts.metrics {
		if strings.HasPrefix(m, "openwebui_") && !documented[m] && !documented[histogramOf(m)] {
			t.Errorf("the exporter serves %s, which has no row in the metric table of docs/reference.md", m)
		}
	}
	if len(documented) < 10 {
		t.Errorf("only %d metrics found in docs/reference.md: the test checks too little", len(documented))
	}
}

// histogramOf returns the histogram a series name such as x_bucket belongs
// to, or "" if it is none of a histogram's series.
func histogramOf(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && facts.metrics[base] {
			return base
		}
	}
	return ""
}
