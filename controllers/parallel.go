package controllers

import (
	"errors"
	"sync"
)

// inParallel runs fn for every item at once and joins their errors. A
// fence's writes within one step (the policies to delete, the accounts to
// rotate, the pods to preserve) do not depend on each other, and a fence is
// the one thing careplane must do in as few round trips as it can; the
// steps themselves stay in their fail-closed order.
func inParallel[T any](items []T, fn func(T) error) error {
	if len(items) == 1 {
		return fn(items[0])
	}
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, item := range items {
		wg.Go(func() { errs[i] = fn(item) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// indices are the indices of items, for inParallel over a slice whose
// results go back in its order.
func indices[T any](items []T) []int {
	out := make([]int, len(items))
	for i := range out {
		out[i] = i
	}
	return out
}

// all runs every fn at once and joins their errors.
func all(fns ...func() error) error {
	return inParallel(fns, func(fn func() error) error { return fn() })
}

// parallel runs fn(0) to fn(n-1), at most limit at a time.
func parallel(n, limit int, fn func(i int)) {
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}
