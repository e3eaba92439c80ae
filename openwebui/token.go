package openwebui

import (
	"errors"
	"os"
	"strings"
)

// StaticToken returns a token source for a fixed credential (env TOKEN).
func StaticToken(token string) (func() (string, error), error) {
	token, err := checkToken(token)
	if err != nil {
		return nil, err
	}
	return func() (string, error) { return token, nil }, nil
}

// FileToken returns a token source that reads the file on every call, so a
// Kubernetes Secret rotated in place is used from the next fetch on. The file
// is read once here, so that a bad path stops start-up.
func FileToken(path string) (func() (string, error), error) {
	read := func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		return checkToken(string(b))
	}
	if _, err := read(); err != nil {
		return nil, err
	}
	return read, nil
}

// checkToken trims surrounding white space (files end in a newline) and
// rejects what cannot be a header value.
func checkToken(token string) (string, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return "", errors.New("the token is empty")
	}
	if strings.HasPrefix(token, "Bearer ") {
		return "", errors.New(`the token starts with "Bearer ": give the token alone`)
	}
	for _, r := range token {
		if r <= ' ' || r == 0x7f {
			return "", errors.New("the token contains white space or a control character")
		}
	}
	return token, nil
}
