/**
 * An exercise, as a learner does it: the answer from solutions/ typed into its first
 * `raise NotImplementedError` stub, the cells up to its `check(...)` cells run, and each check
 * must render ✅/"passed" and no ❌. Which exercise: E2E_EXERCISE, else chooseExercise() in
 * e2e/lib/select.ts (a light one first; else e2e/fixtures/exercise.ipynb).
 *
 * Start it with `make e2e` (e2e/run.sh starts JupyterLab on a copy of the course).
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';
import { describeErrors, LAB_OPTIONS, openNotebook, screenshot, settle } from '../lib/jupyter';
import { cellSource, chooseExercise, readNb } from '../lib/select';

test.use(LAB_OPTIONS);

test('an exercise: a correct answer makes its check say "passed"', async ({ page }) => {
  const { exercise, solution } = chooseExercise();
  test.info().annotations.push({ type: 'exercise', description: `${exercise} (answer from ${solution})` });
  const ex = readNb(exercise);
  const sol = readNb(solution);
  const stubIndex = ex.cells.findIndex(
    (c: any) => c.cell_type === 'code' && /raise NotImplementedError/.test(cellSource(c))
  );
  expect(stubIndex, `${exercise} has a stub raising NotImplementedError`).toBeGreaterThanOrEqual(0);
  // The check cells that follow the stub (one exercise may have several checks).
  const isCheck = (c: any) => c && c.cell_type === 'code' && /\bcheck\s*\(/.test(cellSource(c));
  const firstCheck = ex.cells.findIndex((c: any, i: number) => i > stubIndex && isCheck(c));
  expect(firstCheck, `${exercise} has a check cell after the stub`).toBeGreaterThan(stubIndex);
  let checkIndex = firstCheck;
  while (isCheck(ex.cells[checkIndex + 1])) {
    checkIndex++;
  }
  // The answer: the solution's cell with the same id (else the same position).
  const stubId = ex.cells[stubIndex].id;
  const answerCell =
    (stubId && sol.cells.find((c: any) => c.id === stubId)) ||
    (sol.cells.length === ex.cells.length ? sol.cells[stubIndex] : undefined);
  expect(answerCell, `${solution} has the answer to cell ${stubIndex}`).toBeTruthy();
  const answer = cellSource(answerCell);
  expect(answer).not.toMatch(/raise NotImplementedError/);

  await openNotebook(page, exercise);

  // Type the answer into the stub cell as a learner would (replace the stub's text).
  await page.evaluate(
    ([p, i]) => {
      const nb = (window as any).__e2e.panel(p);
      nb.content.activeCellIndex = i;
      nb.content.mode = 'edit';
    },
    [exercise, stubIndex] as [string, number]
  );
  const editor = page
    .locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell')
    .nth(stubIndex)
    .locator('.cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.insertText(answer);
  await expect
    .poll(() =>
      page.evaluate(
        ([p, i]) => (window as any).__e2e.panel(p).content.model.cells.get(i).sharedModel.getSource(),
        [exercise, stubIndex] as [string, number]
      )
    )
    .toBe(answer);

  // Run everything up to and including the check cell (later stubs are still unsolved).
  await page.evaluate(
    ([p, i]) => {
      const nb = (window as any).__e2e.panel(p);
      nb.content.mode = 'command';
      nb.content.activeCellIndex = i;
    },
    [exercise, checkIndex] as [string, number]
  );
  await page.evaluate(async () => {
    const commands = (window as any).jupyterapp.commands;
    await commands.execute('notebook:run-all-above');
    await commands.execute('notebook:run-cell');
  });
  const state = await settle(page, exercise, 'checking', checkIndex);
  const upToCheck = state.errors.filter(e => e.cell <= checkIndex);
  expect(upToCheck, describeErrors(exercise, upToCheck)).toEqual([]);

  for (let i = firstCheck; i <= checkIndex; i++) {
    const feedback = page
      .locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell')
      .nth(i)
      .locator('.jp-OutputArea-output');
    // The feedback, as rendered: ✅ / "passed", and no ❌.
    await expect(feedback.filter({ hasText: /✅|\bpassed\b/i }).first()).toBeVisible();
    await expect(feedback.filter({ hasText: /❌/ })).toHaveCount(0);
    await feedback.first().scrollIntoViewIfNeeded();
    test.info().annotations.push({ type: 'feedback', description: (await feedback.first().innerText()).slice(0, 200) });
  }
  await screenshot(page, `exercise__${path.posix.basename(exercise)}`);
});
