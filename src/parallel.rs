//! Many independent decisions on every core, results in input order: the one way
//! the command-line tools (`test`, `replay`) spread work over threads.

/// `f` applied to every item, on one scoped thread per state (each thread owns one
/// of `states` and a contiguous chunk of `items`), the results in the order of
/// `items`. Fewer than `parallel_from` items, or fewer than two states: on the
/// calling thread with the first state. No state: no result.
pub fn map_in_order<T, S, R>(
    items: &[T],
    states: &mut [S],
    parallel_from: usize,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    S: Send,
    R: Send,
{
    let threads = states.len();
    let f = &f;
    match states {
        [] => return Vec::new(),
        [first, ..] if threads < 2 || items.len() < parallel_from => {
            return items.iter().map(|item| f(first, item)).collect();
        }
        _ => {}
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .zip(states.iter_mut())
            .map(|(part, state)| {
                scope.spawn(move || part.iter().map(|item| f(state, item)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                // `f` never panics here; were it to, its thread's panic goes on here.
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_in_order;

    #[test]
    fn results_keep_the_input_order_on_any_number_of_threads() {
        let items: Vec<u32> = (0..1000).collect();
        let expected: Vec<u32> = items.iter().map(|i| i * 2).collect();
        for threads in 1..=4 {
            let mut states = vec![0usize; threads];
            let got = map_in_order(&items, &mut states, 10, |seen, i| {
                *seen += 1;
                i * 2
            });
            assert_eq!(got, expected, "{threads} threads");
            assert_eq!(
                states.iter().sum::<usize>(),
                items.len(),
                "{threads} threads"
            );
            if threads > 1 {
                assert!(
                    states.iter().all(|&n| n > 0),
                    "every thread worked: {states:?}"
                );
            }
        }
        assert!(map_in_order(&items, &mut [] as &mut [()], 10, |(), i| *i).is_empty());
        let mut one = [0usize; 3];
        assert_eq!(
            map_in_order(&items[..5], &mut one, 10, |s, i| {
                *s += 1;
                *i
            }),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            one,
            [5, 0, 0],
            "below the threshold: the calling thread, the first state"
        );
    }
}
