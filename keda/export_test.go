package keda

// Polling says whether the push loop is running.
func (s *Scaler) Polling() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poller != nil
}
