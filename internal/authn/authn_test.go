package authn

import (
	"encoding/base64"
	"testing"
)

func TestCredentialPeeking(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		token string
		user  bool
	}{
		{enc(`{"alg":"HS256"}`) + "." + enc(`{"user_id":1}`) + ".sig", true},
		{enc(`{"alg":"HS256"}`) + "." + enc(`{"role":"admin"}`) + ".sig", false},
		{"garbage", false},
		{"a.b.c", false},
		{enc(`{}`) + "." + enc(`[1,2]`) + ".x", false},
	}
	for _, tt := range tests {
		if got := PeekHasUserID(tt.token); got != tt.user {
			t.Errorf("PeekHasUserID(%q) = %v", tt.token, got)
		}
	}
	for in, want := range map[string]string{
		`sig1=("@method");created=1;keyid="admin";alg="ed25519"`: "admin",
		`sig1=("@method");keyid="user:7"`:                        "user:7",
		`sig1=("@method")`:                                       "",
		`sig1=("@method");keyid="unterminated`:                   "",
	} {
		if got := SignatureKeyID(in); got != want {
			t.Errorf("SignatureKeyID(%q) = %q, want %q", in, got, want)
		}
	}
	for in, ok := range map[string]bool{"Bearer abc": true, "bearer abc": true, "Basic abc": false, "Bearer ": false, "": false} {
		if _, got := Bearer(in); got != ok {
			t.Errorf("bearer(%q) = %v", in, got)
		}
	}
}
