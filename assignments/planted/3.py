# Planted wrong solution for assignment 3: the debate topology without the feedback edge to the second planner.
# loses: debate as data | runs in every mode
# replaces: patterns.debate
def debate(n):
    if n != 3:
        raise UserError("the debate pattern takes exactly 3 agents: planner,planner,solver")
    return Topology(_unique(["planner", "planner", "solver"]), [(0, 2), (1, 2)], [(2, 0)])
