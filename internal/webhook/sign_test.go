package webhook

import (
	"testing"
)

func TestSignStandardWebhooksVector(t *testing.T) {
	secret, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		ts   int64
		body string
		want string
		same bool
	}{
		{"spec vector", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, `{"test": 2432232314}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", true},
		{"another id", "msg_p5jXN8AQM9LWM0D4loKWxJel", 1614265330, `{"test": 2432232314}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", false},
		{"another time", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, `{"test": 2432232314}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", false},
		{"another body", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, `{"test": 2432232315}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Sign(secret, tc.id, tc.ts, []byte(tc.body))
			if (got == tc.want) != tc.same {
				t.Fatalf("Sign = %s, want (same=%v) %s", got, tc.same, tc.want)
			}
		})
	}
	h := Headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	for k, want := range map[string]string{
		"webhook-id":        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		"webhook-timestamp": "1614265330",
		"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		"content-type":      "application/json",
		"user-agent":        "custos-webhooks/1",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}
