import Glibc
import SystemPackage

/// A POSIX thread running one closure, joined explicitly. The archive pipeline uses one to
/// decompress beside extraction; nothing here is meant for general concurrency. It takes no
/// signal: every one is blocked in it, so a signal sent to the process (SIGCHLD, a supervisor's
/// SIGIO) reaches the thread that waits for it, never this one, which would drop or die of it.
public final class WorkerThread {
    private var thread = pthread_t()
    private var joined = false

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    public init(_ body: @escaping () -> Void) throws {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        // A new thread starts with its creator's mask.
        var all = sigset_t(), previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let rc = pthread_create(&thread, nil, { arg in
            guard let arg else { return nil }  // pthread_create passes `box`, never nil
            let box = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError("pthread_create", Errno(rawValue: rc))
        }
    }

    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }

    deinit { join() }
}

/// A mutex with one condition variable, for hand-offs between two threads.
public final class Monitor {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// Runs `body` holding the mutex.
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits, holding the mutex, until `ready` is true; then runs `body` and wakes the other side.
    public func await<T>(until ready: () -> Bool, _ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
        }
        while !ready() { pthread_cond_wait(&condition, &mutex) }
        return try body()
    }
}
