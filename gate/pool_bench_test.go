package gate

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkPassThroughPool is BenchmarkPassThrough's small chat through a
// pool of three replicas: the gate reads the model and first message,
// chooses a replica and counts it (16 clients at once, each its own chat).
func BenchmarkPassThroughPool(b *testing.B) {
	var flags []string
	for range 3 {
		backend := smallChatBackend(b)
		flags = append(flags, "pool="+backend.URL)
	}
	g := startGate(b, Config{Backends: poolConfig(b, flags...)})
	eventually(b, "up", func() bool { return g.Stats()[0].State == StateUp })
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			req, _ := http.NewRequest(http.MethodPost, g.url+"/pool/api/chat",
				strings.NewReader(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":false}`))
			req.Header.Set(ChatHeader, "chat")
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
