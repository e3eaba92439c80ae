// Package ollama tests the wake gate against a real Ollama: `ollama serve`
// built from the Go module proxy (.ci/ollama.sh), answering from a tiny
// llama that the tests write with Ollama's own fs/ggml package.
//
// It is a module of its own so that github.com/ollama/ollama never enters the
// exporter's go.mod.
package ollama
