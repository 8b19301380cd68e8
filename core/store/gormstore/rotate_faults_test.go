//go:build faults

package gormstore_test

import "testing"

// TestFaultRotateKill runs rotateKill at scale: 50,000 users, two sealed
// values each (100,000 values), 500 per batch, on both backends.
func TestFaultRotateKill(t *testing.T) {
	rotateKill(t, 50_000, 500, 0)
}
