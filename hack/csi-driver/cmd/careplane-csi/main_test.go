package main

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1073741824", 1 << 30, true},
		{"512Mi", 512 << 20, true},
		{"1Ti", 1 << 40, true},
		{"4Ki", 4096, true},
		{"0", 0, false},
		{"-1Gi", 0, false},
		{"1G", 0, false}, // decimal suffixes are not binary ones: refused, not guessed
		{"Gi", 0, false},
		{"9999999Ti", 0, false}, // overflows int64
	} {
		got, err := parseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
