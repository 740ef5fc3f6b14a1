// User-facing errors: one line naming the problem and the fix. Anything thrown as a UserError is printed
// by the CLI as "error: <message>" with exit code 1 and no stack trace; every other error is a bug.
export class UserError extends Error {
  override readonly name = 'UserError';
  constructor(message: string) {
    super(message);
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
