// Package workers runs a controller's workers: the loop every controller
// shaped like kubernetes/sample-controller has around its queue.
package workers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
)

// Run starts n workers that take items off queue and hand each to process,
// then blocks until ctx ends. The queue never gives one item to two
// workers at once, and holds back an item re-added while it is being
// processed until process returns; process decides what becomes of the
// item (Forget, AddRateLimited, AddAfter), Run marks it done. Workers stop
// once the caller shuts the queue down.
func Run[T comparable](ctx context.Context, n int, queue workqueue.TypedInterface[T], process func(context.Context, T)) {
	for range n {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for {
				item, quit := queue.Get()
				if quit {
					return
				}
				func() {
					defer queue.Done(item)
					process(ctx, item)
				}()
			}
		}, time.Second)
	}
	<-ctx.Done()
}
