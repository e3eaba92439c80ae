package ollama

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

// The model file is the same on every run (WriteGGUF writes tensors
// concurrently), so a blob digest and an answer can be asserted exactly.
func TestTinyModelIsTheSameEveryRun(t *testing.T) {
	dir := t.TempDir()
	first, err := hello.Write(filepath.Join(dir, "a.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		again, err := hello.Write(filepath.Join(dir, "b.gguf"))
		if err != nil {
			t.Fatal(err)
		}
		if again != first {
			t.Fatalf("write %d: digest %s, first write %s", i+2, again, first)
		}
	}
	other, err := TinyModel{Answer: []string{"▁world", "▁hello"}}.Write(filepath.Join(dir, "c.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if other == first {
		t.Errorf("a model with another answer has the same digest %s", first)
	}
}

// The file decodes with Ollama's own reader as the small llama the doc
// describes: about 120K parameters, F32, the SentencePiece vocabulary.
func TestTinyModelDecodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, err := hello.Write(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatalf("ggml.Decode: %v", err)
	}
	kv := m.KV()
	fi, _ := f.Stat()
	params := kv.ParameterCount()
	t.Logf("tiny model: %d parameters, %d bytes", params, fi.Size())
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"architecture", kv.Architecture(), "llama"},
		{"file type (F32: 0, which KV.FileType calls unknown)", kv.Uint("general.file_type", 99), uint32(ggml.FileTypeF32)},
		{"blocks", kv.BlockCount(), uint64(blockCount)},
		{"embedding length", kv.EmbeddingLength(), uint64(embeddingLength)},
		{"tokenizer", kv.String("tokenizer.ggml.model"), "llama"},
		{"vocabulary", len(kv.Strings("tokenizer.ggml.tokens")), 3 + 256 + len(pieces)},
		{"tensors", len(m.Tensors().Items()), 3 + 9*blockCount},
		{"parameters between 100K and 150K", params > 100_000 && params < 150_000, true},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestTinyModelRejectsBadAnswers(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer []string
		err    string
	}{
		{"empty", nil, "empty answer"},
		{"unknown piece", []string{"▁hello", "▁moon"}, `"▁moon" is not in the vocabulary`},
		{"a piece twice", []string{"▁hello", "▁hello"}, "appears twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := TinyModel{Answer: c.answer}.Write(filepath.Join(t.TempDir(), "x.gguf"))
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("got error %v, want one containing %q", err, c.err)
			}
		})
	}
}

func TestTinyModelText(t *testing.T) {
	if got := hello.Text(); got != " hello world" {
		t.Errorf("got %q, want %q", got, " hello world")
	}
}
