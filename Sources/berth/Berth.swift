import ArgumentParser
import BerthLaunch
import BerthRecipe
import BerthStore
import BerthSystem
import Glibc

@main
struct Berth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "Import, keep and boot machine images, as systemd-nspawn and machinectl do.",
        version: berthVersion,
        subcommands: [
            RunCommand.self, BootCommand.self, StartCommand.self,
            PsCommand.self, StatusCommand.self, ShellCommand.self, LoginCommand.self, LogsCommand.self, PoweroffCommand.self, RebootCommand.self, EnableCommand.self, DisableCommand.self, TerminateCommand.self, KillCommand.self,
            ImportCommand.self, ExportCommand.self, ListCommand.self, ShowCommand.self,
            CloneCommand.self, SnapshotCommand.self, RestoreCommand.self,
            RenameCommand.self, RemoveCommand.self, ReadOnlyCommand.self, GCCommand.self,
            MountCommand.self, UmountCommand.self, BuildCommand.self,
        ]
    )

    @OptionGroup var store: StoreOptions

    /// Parses, runs, and turns every failure into one line `berth: error: ...` and a non-zero exit.
    static func main() {
        // Where berth-stage is not beside it, berth is the container's setup process and PID 1 (and
        // --as-pid2's init) itself: no parsing, straight to work.
        if CommandLine.arguments.count == 2 && CommandLine.arguments[1] == ContainerStage.subcommand {
            ContainerStage.main()
        }
        if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == MachineShell.subcommand {
            MachineShell.main(arguments: CommandLine.arguments.dropFirst(2))
        }
        if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == MachineNetwork.tearDownSubcommand {
            MachineNetwork.tearDownMain(arguments: CommandLine.arguments.dropFirst(2))
        }
        if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == ContainerStage.initFlag {
            ContainerStage.runInit(CommandLine.arguments)
        }
        do {
            let arguments = Array(CommandLine.arguments.dropFirst())
            // What a killed supervisor left of its machine's network goes with the next command.
            MachineNetwork.tidyHost()
            // Its status by exit, not by a thrown ExitCode: the cast that catches one scans the
            // binary's every protocol conformance, a millisecond of the command's few.
            if let shell = ShellCommand.fastPath(arguments) { Glibc.exit(try shell.enter()) }
            if let line = try RunCommandLine.parse(arguments) {
                if line.help {
                    writeOut(1, RunCommandLine.helpText)
                    Glibc.exit(0)
                }
                Glibc.exit(try line.launch())  // the container's own status
            }
            var command = try parseAsRoot(StoreOptions.hoisted(arguments))
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch let error as UsageError {
            fail(error.message, code: UsageError.exitStatus)
        } catch let error as StoreError {
            fail(error.message, code: exitStatus(for: error.kind))
        } catch let error as LaunchError {
            fail(error.message)
        } catch let error as SystemError {
            fail("\(error)")  // what failed, on what: no usage to point at
        } catch let error as RecipeError {
            // A failing step's last lines come first, so the error is still the last line.
            for line in error.output { writeOut(2, "  | \(line)\n") }
            fail(error.message)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            var text = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            if text.hasPrefix("Error: ") { text.removeFirst("Error: ".count) }
            fail(text + " (see 'berth --help')", code: code.rawValue)
        }
    }

    /// Control characters in the message are escaped (a name from an archive, a record or the
    /// command line may carry them): the error is one line, and cannot drive the terminal.
    static func fail(_ message: String, code: Int32 = 1) -> Never {
        writeOut(2, "berth: error: \(Printable.escaping(message))\n")
        Glibc.exit(code)
    }

    /// A change that took effect with something left undone, or a record that cannot be read.
    static func warn(_ message: String) {
        writeOut(2, "berth: warning: \(Printable.escaping(message))\n")
    }
}

/// What `berth --version` prints.
let berthVersion = "0.1.0"

/// `--store DIR`, accepted before and after the subcommand.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The image store (default: $BERTH_STORE, else /var/lib/machines).", valueName: "DIR"))
    var store: String?

    var path: String { Self.path(store) }

    /// The store `--store` names, else $BERTH_STORE, else /var/lib/machines.
    static func path(_ store: String?) -> String {
        if let store { return store }
        if let env = environment("BERTH_STORE"), !env.isEmpty { return env }
        return "/var/lib/machines"
    }

    /// The arguments with every `--store DIR` moved to the front, where the root command parses
    /// it for all. swift-argument-parser 1.8 takes an option that the root command and a
    /// subcommand share only as the subcommand's first option (`list --json --store S` fails),
    /// and the contract is that it goes anywhere. The scan stops at `--`. (Run and boot lines
    /// are not read by swift-argument-parser; RunCommandLine takes --store anywhere itself.)
    static func hoisted(_ arguments: [String]) -> [String] {
        // Options whose value is the next argument, so a value `--store` is not taken for one.
        let valued: Set<String> = ["--verify", "--max-size", "--max-entries", "--name"]
        var rest: [String] = [], stores: [String] = []
        var i = 0
        scan: while i < arguments.count {
            let argument = arguments[i]
            switch argument {
            case "--":
                break scan
            case "--store" where i + 1 < arguments.count:
                stores += [argument, arguments[i + 1]]
                i += 2
                continue
            case _ where argument.hasPrefix("--store="):
                stores.append(argument)
            case _ where valued.contains(argument):
                rest.append(argument)
                if i + 1 < arguments.count { rest.append(arguments[i + 1]) }
                i += 2
                continue
            default:
                rest.append(argument)
            }
            i += 1
        }
        return stores + rest + arguments[i...]
    }

    func open(create: Bool) throws -> ImageStore {
        try Self.open(store, access: create ? .create : .open)
    }

    static func open(_ store: String?, create: Bool) throws -> ImageStore {
        try open(store, access: create ? .create : .open)
    }

    static func open(_ store: String?, access: ImageStore.Access) throws -> ImageStore {
        let opened = try ImageStore(root: .init(path(store)), access: access)
        opened.onWarning = { Berth.warn($0) }
        return opened
    }
}

/// The value of an environment variable of berth's own.
func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
}

