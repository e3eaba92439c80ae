package ollama

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"

	"github.com/ollama/ollama/fs/ggml"
)

// The tiny model's sizes: the smallest llama that Ollama 0.17.4 loads and
// runs on both its engines (../shared/docs/ollama-gate.md, "A tiny real
// model"). About 120K parameters, all F32.
const (
	embeddingLength   = 64
	blockCount        = 2
	feedForwardLength = 128
	headCount         = 4
	headCountKV       = 4
	ropeDimension     = 16
	contextLength     = 4096
)

// Token ids of the SentencePiece vocabulary: the control tokens first, then
// the 256 byte tokens llama.cpp needs for its byte fallback, then pieces.
const (
	tokenUnk   = 0
	tokenBOS   = 1
	tokenEOS   = 2
	firstByte  = 3
	firstPiece = firstByte + 256
)

// pieces are the vocabulary's normal tokens; "▁" is SentencePiece's space.
var pieces = []string{"▁hello", "▁world", "▁", "h", "e", "l", "o", "w", "r", "d"}

// The token types of llama.cpp's SentencePiece vocabulary.
const (
	typeNormal  = 1
	typeUnknown = 2
	typeControl = 3
	typeByte    = 6
)

// TinyModel is a GGUF model that answers every prompt with Answer and then
// its end-of-sequence token, whatever the sampler's settings. With Loop it
// repeats Answer without end instead, so that num_predict sets how long an
// answer streams (a stream that outlives a drain, in a real Ollama).
type TinyModel struct {
	Answer []string // pieces of the vocabulary, each at most once, e.g. {"▁hello", "▁world"}: " hello world"
	Loop   bool
}

// Text is what the model answers, as Ollama streams it.
func (m TinyModel) Text() string {
	var s string
	for _, p := range m.Answer {
		s += decodePiece(p)
	}
	return s
}

func decodePiece(p string) string {
	out := []rune{}
	for _, r := range p {
		if r == '▁' {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}

// Write writes the model as a GGUF file at path and returns its digest,
// "sha256:<hex>", as Ollama's /api/blobs wants it. The file is the same on
// every run: WriteGGUF writes tensors concurrently, so every tensor draws its
// noise from a generator of its own, seeded by its name.
//
// How it answers: every layer weight is small noise (so the forward pass is a
// real one, but changes nothing that matters), and the embeddings are one-hot:
// the k-th token of the answer points along dimension k+1, every other token
// along dimension 0. The residual stream then carries the current token's
// direction through both blocks, and `output` maps dimension k to the answer's
// k-th token (the last one to EOS) with a logit far above all others.
func (m TinyModel) Write(path string) (string, error) {
	answer, err := m.tokenIDs()
	if err != nil {
		return "", err
	}
	vocab := vocabulary()
	direction := make([]int, len(vocab)) // token id -> the one-hot dimension of its embedding
	for k, id := range answer {
		direction[id] = k + 1
	}
	next := make([]int, len(answer)+1) // dimension -> the token that follows
	copy(next, answer)
	next[len(answer)] = tokenEOS
	if m.Loop {
		next[len(answer)] = answer[0]
	}

	const logit = 10 // times RMS-normed one-hot (8): 80 against ~0
	n := uint64(len(vocab))
	tensors := []*ggml.Tensor{
		f32("token_embd.weight", []uint64{embeddingLength, n}, func(i int) float32 {
			if i%embeddingLength == direction[i/embeddingLength] {
				return 1
			}
			return 0
		}),
		f32("output.weight", []uint64{embeddingLength, n}, func(i int) float32 {
			tok, dim := i/embeddingLength, i%embeddingLength
			if dim < len(next) && next[dim] == tok {
				return logit
			}
			return 0
		}),
		f32("output_norm.weight", []uint64{embeddingLength}, one),
	}
	for b := range blockCount {
		name := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", b, s) }
		tensors = append(tensors,
			f32(name("attn_norm"), []uint64{embeddingLength}, one),
			f32(name("ffn_norm"), []uint64{embeddingLength}, one),
			noise(name("attn_q"), embeddingLength, embeddingLength),
			noise(name("attn_k"), embeddingLength, embeddingLength/headCount*headCountKV),
			noise(name("attn_v"), embeddingLength, embeddingLength/headCount*headCountKV),
			noise(name("attn_output"), embeddingLength, embeddingLength),
			noise(name("ffn_gate"), embeddingLength, feedForwardLength),
			noise(name("ffn_up"), embeddingLength, feedForwardLength),
			noise(name("ffn_down"), feedForwardLength, embeddingLength),
		)
	}

	scores := make([]float32, len(vocab))
	types := make([]int32, len(vocab))
	for i := range vocab {
		switch {
		case i == tokenUnk:
			types[i] = typeUnknown
		case i < firstByte:
			types[i] = typeControl
		case i < firstPiece:
			types[i] = typeByte
		default:
			types[i] = typeNormal
			scores[i] = -float32(i - firstPiece) // SentencePiece merges the best-scored piece first
		}
	}
	kv := ggml.KV{
		"general.architecture":             "llama",
		"general.name":                     "tiny",
		"general.file_type":                uint32(ggml.FileTypeF32),
		"general.alignment":                uint32(32),
		"context_length":                   uint32(contextLength),
		"embedding_length":                 uint32(embeddingLength),
		"block_count":                      uint32(blockCount),
		"feed_forward_length":              uint32(feedForwardLength),
		"attention.head_count":             uint32(headCount),
		"attention.head_count_kv":          uint32(headCountKV),
		"attention.layer_norm_rms_epsilon": float32(1e-5),
		"rope.dimension_count":             uint32(ropeDimension),
		"rope.freq_base":                   float32(10000),
		"vocab_size":                       uint32(len(vocab)),
		"tokenizer.ggml.model":             "llama",
		"tokenizer.ggml.tokens":            vocab,
		"tokenizer.ggml.scores":            scores,
		"tokenizer.ggml.token_type":        types,
		"tokenizer.ggml.unknown_token_id":  uint32(tokenUnk),
		"tokenizer.ggml.bos_token_id":      uint32(tokenBOS),
		"tokenizer.ggml.eos_token_id":      uint32(tokenEOS),
		"tokenizer.ggml.add_bos_token":     true,
		"tokenizer.ggml.add_eos_token":     false,
	}

	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("creating the tiny model: %w", err)
	}
	defer f.Close()
	if err := ggml.WriteGGUF(f, kv, tensors); err != nil {
		return "", fmt.Errorf("writing the tiny model %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("reading the tiny model back: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing the tiny model: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("closing the tiny model: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// tokenIDs checks the answer: known pieces, none twice (each needs a
// direction of its own), and room for all of them plus EOS in the embedding.
func (m TinyModel) tokenIDs() ([]int, error) {
	if len(m.Answer) == 0 {
		return nil, fmt.Errorf("tiny model: empty answer")
	}
	if len(m.Answer)+2 > embeddingLength {
		return nil, fmt.Errorf("tiny model: an answer of %d tokens does not fit %d dimensions", len(m.Answer), embeddingLength)
	}
	seen := map[string]bool{}
	ids := make([]int, 0, len(m.Answer))
	for _, p := range m.Answer {
		i := indexOf(pieces, p)
		if i < 0 {
			return nil, fmt.Errorf("tiny model: %q is not in the vocabulary %q", p, pieces)
		}
		if seen[p] {
			return nil, fmt.Errorf("tiny model: %q appears twice in the answer (each token needs its own direction)", p)
		}
		seen[p] = true
		ids = append(ids, firstPiece+i)
	}
	return ids, nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func vocabulary() []string {
	v := []string{"<unk>", "<s>", "</s>"}
	for b := range 256 {
		v = append(v, fmt.Sprintf("<0x%02X>", b))
	}
	return append(v, pieces...)
}

func one(int) float32 { return 1 }

// noise is a layer weight of small values from a generator seeded by the
// tensor's name: the same bytes on every run, whatever order WriteGGUF
// writes the tensors in.
func noise(name string, rows, cols uint64) *ggml.Tensor {
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x7469_6e79)) // "tiny"
	values := make([]float32, rows*cols)
	for i := range values {
		values[i] = (rng.Float32()*2 - 1) * 0.01
	}
	return f32(name, []uint64{rows, cols}, func(i int) float32 { return values[i] })
}

// f32 is an F32 tensor of the given ggml shape (the fastest-moving dimension
// first) whose i-th value is value(i).
func f32(name string, shape []uint64, value func(i int) float32) *ggml.Tensor {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return &ggml.Tensor{Name: name, Kind: uint32(ggml.TensorTypeF32), Shape: shape, WriterTo: f32Data{n, value}}
}

type f32Data struct {
	n     int
	value func(int) float32
}

func (d f32Data) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 4*d.n)
	for i := range d.n {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(d.value(i)))
	}
	n, err := w.Write(buf)
	return int64(n), err
}
