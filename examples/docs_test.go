package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
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

// TestREADMEIsShortAndInOrder keeps the README a user's five-minute read,
// in the order issue 13 set: internals belong in docs/.
func TestREADMEIsShortAndInOrder(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 380 {
		t.Errorf("README.md has %d lines, want about 360 at most: move details to docs/", len(lines))
	}
	want := []string{"Quick start", "Which token", "Deploy", "Choosing a KEDA trigger", "Idle tabs",
		"The wake gate", "Configuration", "Troubleshooting", "Reference", "Links"}
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

// TestREADMEConfigurationTable: the README's flag table lists every flag of
// --help-long, and nothing else.
func TestREADMEConfigurationTable(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(raw)
	start, end := strings.Index(section, "\n## Configuration\n"), strings.Index(section, "\n## Troubleshooting\n")
	if start < 0 || end < start {
		t.Fatal("no Configuration section before Troubleshooting in README.md")
	}
	section = section[start:end]
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range regexp.MustCompile("`--([a-z0-9.-]+)`").FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	for name := range facts.flags {
		if strings.HasPrefix(name, "no-") || name == "help" || name == "help-long" || name == "help-man" || name == "version" {
			continue
		}
		if !documented[name] {
			t.Errorf("flag --%s is not in the README's Configuration table", name)
		}
	}
	for name := range documented {
		if !facts.flags[name] {
			t.Errorf("the README's Configuration table lists --%s, which the exporter does not have", name)
		}
	}
}
