// The small half of berth's launch, an executable of its own that carries only BerthLaunch
// and what that needs (no argument parser, no archives, no Foundation), so it starts in a
// fraction of the time the whole berth binary takes and stays a few megabytes resident:
//
//   berth-stage --supervise ARGS   the supervisor: `berth run` execs it once the container's
//                                  first process is started, which stays its child
//   berth-stage                    the container's first process: sets the container up, execs
//                                  the payload (the description on descriptor 3)
//   (berth-init) --as-pid2-init    --as-pid2's init, run from a sealed in-memory copy of this file
//   berth-stage __join FIELDS      `berth shell`'s process that enters a running machine
//   berth-stage __network-down ... a machine's network torn down after its supervisor ended
//
// berth supervises and stages by itself when this file is not beside it.
import BerthLaunch

let arguments = CommandLine.arguments
if arguments.count >= 2, arguments[1] == Supervisor.supervisorFlag {
    Supervisor.supervise(arguments: arguments.dropFirst(2))
}
if arguments.count >= 2, arguments[1] == MachineShell.subcommand {
    MachineShell.main(arguments: arguments.dropFirst(2))
}
if arguments.count >= 2, arguments[1] == MachineNetwork.tearDownSubcommand {
    MachineNetwork.tearDownMain(arguments: arguments.dropFirst(2))
}
if arguments.count >= 2, arguments[1] == ContainerStage.initFlag {
    ContainerStage.runInit(arguments)
}
ContainerStage.main()
