# Planted wrong solution for assignment 6: the token count forgets every agent but the last.
# loses: the end-to-end table
# replaces: bench.end_to_end
def end_to_end(system, questions, rounds_list, steps, max_new_tokens):
    rows, device = [], system.backbones[-1].device
    plan = [("single", 1)] + [(m, r) for r in rounds_list for m in ("text", "latent")]
    for mode, r in plan:
        peak_gb(device, reset=True)
        t0 = time.perf_counter()
        recs = system.run(questions, mode, r, steps, max_new_tokens)
        sync(device)
        secs = time.perf_counter() - t0
        rows.append(dict(mode=mode, rounds=r, seconds=secs, tokens=sum(x["tokens"][system.roles[-1]] for x in recs),
                         common_tokens=common_tokens([t for x in recs for t in x["written"]]),
                         latent_steps=sum(x["latent_steps"] for x in recs), peak_gb=peak_gb(device)))
    for row in rows:
        text = next((x for x in rows if x["mode"] == "text" and x["rounds"] == row["rounds"]), None)
        if row["mode"] == "latent" and text:
            row["speedup_vs_text"] = text["seconds"] / row["seconds"]
            row["token_reduction_vs_text"] = 1 - row["tokens"] / text["tokens"]
    return rows
