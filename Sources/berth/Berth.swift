import ArgumentParser
import BerthLaunch
import BerthStore
import FoundationEssentials
import Glibc

@main
struct Berth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "Import, keep and boot machine images, as systemd-nspawn and machinectl do.",
        subcommands: [
            RunCommand.self, BootCommand.self,
            ImportCommand.self, ExportCommand.self, ListCommand.self, ShowCommand.self,
            CloneCommand.self, SnapshotCommand.self, RestoreCommand.self,
            RenameCommand.self, RemoveCommand.self, ReadOnlyCommand.self, GCCommand.self,
            MountCommand.self, UmountCommand.self,
        ],
        defaultSubcommand: RunCommand.self
    )

    @OptionGroup var store: StoreOptions

    /// Parses, runs, and turns every failure into one line `berth: error: ...` and a non-zero exit.
    static func main() {
        // The container's first process is a fresh exec of berth: no parsing, straight to work.
        if CommandLine.arguments.count == 2 && CommandLine.arguments[1] == ContainerStage.subcommand {
            ContainerStage.main()
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)  // the container's own status
        } catch let error as StoreError {
            fail(error.message)
        } catch let error as LaunchError {
            fail(error.message)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            var text = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            if text.hasPrefix("Error: ") { text.removeFirst("Error: ".count) }
            fail(text + " (see 'berth --help')", code: code.rawValue)
        }
    }

    static func fail(_ message: String, code: Int32 = 1) -> Never {
        writeOut(2, "berth: error: \(message)\n")
        Glibc.exit(code)
    }
}

/// `--store DIR`, accepted before and after the subcommand.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The image store (default: $BERTH_STORE, else /var/lib/machines).", valueName: "DIR"))
    var store: String?

    var path: String {
        if let store { return store }
        if let env = ProcessInfo.processInfo.environment["BERTH_STORE"], !env.isEmpty { return env }
        return "/var/lib/machines"
    }

    func open(create: Bool) throws -> ImageStore {
        try ImageStore(root: .init(path), create: create)
    }
}

