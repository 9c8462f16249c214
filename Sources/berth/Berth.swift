import ArgumentParser
import BerthLaunch
import BerthRecipe
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
            MountCommand.self, UmountCommand.self, BuildCommand.self,
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
            var command = try parseAsRoot(StoreOptions.hoisted(Array(CommandLine.arguments.dropFirst())))
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)  // the container's own status
        } catch let error as StoreError {
            fail(error.message)
        } catch let error as LaunchError {
            fail(error.message)
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

    /// The arguments with every `--store DIR` moved to the front, where the root command parses
    /// it for all. swift-argument-parser 1.8 takes an option that the root command and a
    /// subcommand share only as the subcommand's first option (`list --json --store S` fails),
    /// and the contract is that it goes anywhere. The scan stops at `--` and at the command of
    /// `run` (or the image of `boot`): what follows belongs to the container.
    static func hoisted(_ arguments: [String]) -> [String] {
        // Options (of any subcommand) whose value is the next argument, so it is not taken for
        // a subcommand or a command.
        let valued: Set<String> = ["-D", "--directory", "-M", "--machine", "-E", "--setenv", "--bind", "--bind-ro",
                                   "--chdir", "-u", "--user", "--hostname", "--verify", "--max-size", "--name"]
        let valuedShort: Set<Character> = ["D", "M", "E", "u"]
        let subcommands = Set(Berth.configuration.subcommands.compactMap { $0.configuration.commandName })
        var rest: [String] = [], stores: [String] = []
        var subcommand: String?
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
            case _ where argument.hasPrefix("-") && !argument.hasPrefix("--") && argument.count > 2
                && valuedShort.contains(argument.last!):
                // A cluster such as -bD, whose last letter takes the next argument.
                rest += [argument] + (i + 1 < arguments.count ? [arguments[i + 1]] : [])
                i += 2
                continue
            case _ where argument.hasPrefix("-"):
                rest.append(argument)
            default:
                rest.append(argument)
                if subcommand == nil && subcommands.contains(argument) {
                    subcommand = argument
                } else if subcommand == nil || subcommand == "run" || subcommand == "boot" {
                    i += 1
                    break scan
                }
            }
            i += 1
        }
        return stores + rest + arguments[i...]
    }

    func open(create: Bool) throws -> ImageStore {
        try ImageStore(root: .init(path), create: create)
    }
}

