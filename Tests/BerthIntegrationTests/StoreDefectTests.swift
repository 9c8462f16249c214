import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The store's defects a new user hit (issue 13) and the early-released lock (issue 12), each
/// as a user meets it, on the busybox root.
@Suite struct StoreDefectTests {
    private func storeWith(_ names: [String], _ label: String) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        for name in names {
            let result = try berth(["import", "-q", Fixtures.busybox, name], store: tmp)
            #expect(result.status == 0, "\(result)")
        }
        return tmp
    }

    private func background(_ tmp: TemporaryDirectory, _ arguments: [String], environment: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: berthBinary)
        process.arguments = ["--store", tmp.appending("store").string] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    private func listed(_ tmp: TemporaryDirectory, _ options: [String] = []) throws -> [String: [String: Any]] {
        let list = try berth(["list", "--json"] + options, store: tmp)
        #expect(list.status == 0, "\(list)")
        let records = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: records.map { ($0["name"] as? String ?? "", $0) })
    }

    /// `remove` holds the image's lock until its rename is done, so a `run` that starts in that
    /// moment is refused. BERTH_PAUSE_AT holds remove there for 300 ms on every round; with the
    /// lock dropped at once (the bug), the run started in the pause and both succeeded.
    @Test func removeAndRunNeverBothSucceed() throws {
        let tmp = try storeWith(["bb"], "race-remove-run")
        var outcomes: [String: Int] = [:]
        for round in 0..<12 {
            let layered = round % 2 == 1
            let image = "img\(round)"
            let made = try berth(layered ? ["clone", "bb", image] : ["import", "-q", Fixtures.busybox, image], store: tmp)
            #expect(made.status == 0, "\(made)")
            let removeFirst = round % 4 < 2
            var remove: Process?, run: Process?
            if removeFirst { remove = try background(tmp, ["remove", "-q", image], environment: ["BERTH_PAUSE_AT": "remove:300"]) }
            usleep(UInt32.random(in: 20_000...120_000))
            run = try background(tmp, ["run", "-q", "-M", image, "/bin/sh", "-c", "sleep 1"])
            if !removeFirst {
                usleep(UInt32.random(in: 100_000...300_000))
                remove = try background(tmp, ["remove", "-q", image], environment: ["BERTH_PAUSE_AT": "remove:300"])
            }
            remove?.waitUntilExit()
            run?.waitUntilExit()
            let (removed, ran) = (remove?.terminationStatus == 0, run?.terminationStatus == 0)
            #expect(!(removed && ran), "round \(round) (\(layered ? "layered" : "directory")): remove and run both succeeded")
            outcomes["\(removed ? "removed" : "kept")/\(ran ? "ran" : "refused")", default: 0] += 1
            // The store agrees with what remove said.
            #expect(try listedNames(tmp).contains(image) == !removed, "round \(round)")
            if !removed { #expect(try berth(["remove", "-q", image], store: tmp).status == 0) }
        }
        // Both orders happened: each side won some rounds.
        #expect(outcomes["removed/refused", default: 0] > 0 && outcomes["kept/ran", default: 0] > 0, "\(outcomes)")
        #expect(try listedNames(tmp) == ["bb"])
    }

    @Test func restoreTakesOnlyASnapshotOfItsOwnLine() throws {
        let tmp = try storeWith(["debian", "busybox"], "restore-line")
        #expect(try berth(["clone", "debian", "web1"], store: tmp).status == 0)
        #expect(try inImage("web1", "echo web1 > /etc/mark", store: tmp).status == 0)
        let refused = try berth(["restore", "web1", "busybox"], store: tmp)
        expectCleanFailure(refused, "'busybox' is not a snapshot of 'web1'")
        #expect(refused.status == 65, "invalid input: \(refused)")
        #expect(try inImage("web1", "cat /etc/mark", store: tmp).stdout == "web1\n")
        #expect(try berth(["show", "web1"], store: tmp).stdout.contains("Parent: debian"))
        // A snapshot of another line is refused as well, even of a clone of the same content.
        #expect(try berth(["clone", "busybox", "other"], store: tmp).status == 0)
        #expect(try berth(["snapshot", "other", "other-snap"], store: tmp).status == 0)
        expectCleanFailure(try berth(["restore", "web1", "other-snap"], store: tmp), "is not a snapshot of 'web1'")
        expectCleanFailure(try berth(["restore", "debian", "other-snap"], store: tmp), "is not a snapshot of 'debian'")
        // Its own snapshot, its parent, and its parent's snapshot are its line.
        #expect(try berth(["snapshot", "web1", "s1"], store: tmp).status == 0)
        #expect(try inImage("web1", "echo later > /etc/mark", store: tmp).status == 0)
        #expect(try berth(["restore", "web1", "s1"], store: tmp).status == 0)
        #expect(try inImage("web1", "cat /etc/mark", store: tmp).stdout == "web1\n")
        #expect(try berth(["snapshot", "debian", "debian-snap"], store: tmp).status == 0)
        #expect(try berth(["restore", "web1", "debian-snap"], store: tmp).status == 0)
        #expect(try inImage("web1", "test ! -e /etc/mark && echo gone", store: tmp).stdout == "gone\n")
        #expect(try berth(["restore", "web1", "debian"], store: tmp).status == 0)
        #expect(try berth(["show", "web1"], store: tmp).stdout.contains("Parent: debian"))
    }

    @Test func removeChecksEveryNameFirstAndCountsARepeatOnce() throws {
        let tmp = try storeWith(["a", "b", "c", "d"], "remove-names")
        let twice = try berth(["remove", "a", "a"], store: tmp)
        #expect(twice.status == 0 && twice.stderr.isEmpty, "\(twice)")
        #expect(twice.stdout.hasPrefix("Removed 'a', freeing "), "\(twice)")
        #expect(try berth(["remove", "c", "b", "c"], store: tmp).status == 0)
        try expectStore(tmp, holds: ["d"])
        let missing = try berth(["remove", "d", "nothing", "d"], store: tmp)
        expectCleanFailure(missing, "no image 'nothing'")
        #expect(missing.status == 66, "not found: \(missing)")
        // A busy one keeps all in place too.
        #expect(try berth(["import", "-q", Fixtures.busybox, "e"], store: tmp).status == 0)
        var holder = try background(tmp, ["run", "-q", "-M", "e", "/bin/sh", "-c", "sleep 30"])
        defer { kill(holder.processIdentifier, SIGKILL); holder.waitUntilExit() }
        // Once the run holds e: an ephemeral run beside it is refused.
        try waitUntil(timeout: 30) {
            if !holder.isRunning { holder = try background(tmp, ["run", "-q", "-M", "e", "/bin/sh", "-c", "sleep 30"]) }
            return try inImage("e", "true", store: tmp, options: ["-x"]).status != 0
        }
        let busy = try berth(["remove", "d", "e"], store: tmp)
        expectCleanFailure(busy, "image 'e' is in use")
        #expect(busy.status == 75, "in use: \(busy)")
        #expect(try listedNames(tmp) == ["d", "e"])
    }

    @Test func listAndShowWriteNothing() throws {
        let tmp = try TemporaryDirectory("read-only-list")
        // A directory of machinectl's images, with no berth state in it.
        let plain = tmp.appending("store")
        #expect(try shell("mkdir -m 0700 '\(plain.string)' && mkdir -p '\(plain.string)/foreign/etc' && echo 'PRETTY_NAME=\"Foreign\"' > '\(plain.string)/foreign/etc/os-release'").status == 0)
        let before = try TreeManifest(of: plain)
        let list = try berth(["list"], store: tmp)
        #expect(list.status == 0 && list.stdout.contains("foreign"), "\(list)")
        #expect(try berth(["list", "--json", "--usage"], store: tmp).status == 0)
        #expect(try berth(["show", "foreign"], store: tmp).stdout.contains("OS: Foreign"))
        expectCleanFailure(try berth(["show", "nothing"], store: tmp), "no image 'nothing'")
        #expect(try TreeManifest(of: plain) == before, "list or show wrote to the store")
        #expect(try FileStatus.of(plain.appending(".berth")) == nil)
        // A store that does not exist is an error, and is not made.
        let missing = try run(berthBinary, ["--store", tmp.appending("nowhere").string, "list"])
        expectCleanFailure(missing, "no store at \(tmp.appending("nowhere").string)")
        #expect(missing.status == 66, "\(missing)")
        expectCleanFailure(try run(berthBinary, ["--store", tmp.appending("nowhere").string, "show", "x"]), "no store at")
        #expect(try FileStatus.of(tmp.appending("nowhere")) == nil)
    }

    /// Beside a writer, nothing may read the image (its tree changes under the reader; under an
    /// overlay that is undefined), so `-x`, `--read-only`, `export` and `mount` are refused with
    /// an error that suggests none of them. Beside readers, readers are welcome.
    @Test func aBusyImageSaysOnlyWhatIsPossible() throws {
        let tmp = try storeWith(["bb"], "busy-errors")
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        let mountPoint = tmp.appending("mnt")
        _ = mkdir(mountPoint.string, 0o755)
        defer { _ = try? berth(["umount", mountPoint.string], store: tmp) }
        for image in ["c", "bb"] {
            // A writer that holds the image: started again if it ended early (a killed
            // machine's teardown can still hold what the next start needs for a moment).
            var writer = try background(tmp, ["run", "-q", "-M", image, "/bin/sh", "-c", "sleep 30"])
            defer { kill(writer.processIdentifier, SIGKILL); writer.waitUntilExit() }
            var busy = CommandResult(status: 0, stdout: "", stderr: "")
            try waitUntil(timeout: 30) {
                if !writer.isRunning { writer = try background(tmp, ["run", "-q", "-M", image, "/bin/sh", "-c", "sleep 30"]) }
                busy = try inImage(image, "true", store: tmp, options: ["-x"])
                return busy.status != 0
            }
            #expect(writer.isRunning, "the writer of \(image) did not start")
            for result in [busy, try inImage(image, "true", store: tmp, options: ["--read-only"]),
                           try berth(["export", image, tmp.appending("x.tar").string], store: tmp),
                           try berth(["run", "-q", "-M", image, "/bin/true"], store: tmp)] {
                expectCleanFailure(result, "is in use by another container that writes to it")
                #expect(!result.stderr.contains("--read-only or --ephemeral"), "\(result)")
                #expect(result.status == 75, "\(result)")
            }
            if image == "c" {
                expectCleanFailure(try berth(["mount", image, mountPoint.string], store: tmp), "that writes to it")
            }
            #expect(try FileStatus.of(tmp.appending("x.tar")) == nil)
        }
        // Beside a reader: other readers and an export are fine; a writer is told how to join.
        // Started again if it found the image still held: the writer killed above may not have
        // let go yet (its container's teardown runs after its supervisor is gone).
        var reader = try background(tmp, ["run", "-q", "--read-only", "-M", "c", "/bin/sh", "-c", "sleep 30"])
        defer { kill(reader.processIdentifier, SIGKILL); reader.waitUntilExit() }
        var writable = CommandResult(status: 0, stdout: "", stderr: "")
        try waitUntil(timeout: 30) {
            if !reader.isRunning { reader = try background(tmp, ["run", "-q", "--read-only", "-M", "c", "/bin/sh", "-c", "sleep 30"]) }
            writable = try inImage("c", "true", store: tmp)
            return writable.status != 0
        }
        expectCleanFailure(writable, "run this one --read-only or --ephemeral too")
        #expect(try inImage("c", "true", store: tmp, options: ["-x"]).status == 0)
        #expect(try berth(["export", "c", tmp.appending("c.tar").string], store: tmp).status == 0)
        expectCleanFailure(try berth(["remove", "c"], store: tmp), "in use by read-only or ephemeral containers")
    }

    @Test func usageIsOwnAndSharedAndListWalksNoTreeItKnows() throws {
        let tmp = try storeWith(["bb"], "usage")
        var images = try listed(tmp)
        let tree = images["bb"]?["usage"] as? Int ?? 0
        #expect(tree > 1_000_000 && images["bb"]?["shared"] as? Int == 0, "\(images)")
        // Changed behind berth's back, the tree keeps its figure: list did not walk it.
        #expect(try shell("head -c 3000000 /dev/zero > '\(tmp.string)/store/bb/ballast'").status == 0)
        #expect(try listed(tmp)["bb"]?["usage"] as? Int == tree)
        #expect(try shell("rm '\(tmp.string)/store/bb/ballast'").status == 0)
        // A writable run drops the figure: list says it does not know, --usage and show measure.
        #expect(try inImage("bb", "head -c 2000000 /dev/zero > /ballast", store: tmp).status == 0)
        #expect(try listed(tmp)["bb"]?["usage"] is NSNull)
        #expect(try berth(["list"], store: tmp).stdout.contains(" - "))
        #expect(try listed(tmp, ["--usage"])["bb"]?["usage"] as? Int ?? 0 > tree + 1_900_000)
        #expect(try shell("rm '\(tmp.string)/store/bb/ballast'").status == 0)

        // A clone shares the tree; each owns only its writable layer.
        #expect(try berth(["clone", "bb", "c"], store: tmp).status == 0)
        #expect(try inImage("c", "head -c 2000000 /dev/zero > /own", store: tmp).status == 0)
        images = try listed(tmp, ["--usage"])
        for name in ["bb", "c"] { #expect(images[name]?["shared"] as? Int ?? 0 > 1_000_000, "\(name): \(images)") }
        #expect(images["bb"]?["usage"] as? Int ?? .max < 100_000, "\(images)")
        #expect(images["c"]?["usage"] as? Int ?? 0 > 1_900_000, "\(images)")
        // Removing c frees what only c used, and says so; bb then owns the tree alone.
        let removed = try berth(["remove", "c"], store: tmp)
        #expect(removed.stdout.range(of: #"^Removed 'c', freeing [12]\.[0-9]M\.\n$"#, options: .regularExpression) != nil, "\(removed)")
        images = try listed(tmp)
        #expect(images["bb"]?["usage"] as? Int ?? 0 > 1_000_000 && images["bb"]?["shared"] as? Int == 0, "\(images)")
        let gc = try berth(["gc"], store: tmp)
        #expect(gc.stdout == "Freed 0 layers, 0B.\n", "remove left a layer for gc: \(gc)")
    }

    @Test func aBuiltImagesParentIsItsBase() throws {
        let tmp = try storeWith(["bb"], "built-parent")
        let recipe = tmp.appending("web.toml")
        try writeFile(recipe, "name = \"web\"\n[base]\nimage = \"bb\"\n[[step]]\nwrite = \"/etc/motd\"\ncontent = \"hi\"\n")
        let built = try berth(["build", "-q", recipe.string], store: tmp)
        #expect(built.status == 0, "\(built)")
        #expect(try berth(["show", "web"], store: tmp).stdout.contains("Parent: bb"))
        #expect(try berth(["show", "bb"], store: tmp).stdout.contains("Dependants: web"))
    }
}
